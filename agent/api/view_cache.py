"""Answers kept between requests, so that a list of 1,000 servers costs little more than
the few that changed: each server's detail view as JSON text (DetailFragments) and whole
list answers while the store has not changed (ListAnswers)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from agent.api.views import Urls, server_detail, to_json
from agent.model.server import Server


class DetailFragments:
    """Each server's detail view as JSON text, kept between requests: a list of 1,000
    servers of which few changed renders few. An entry is keyed by the server's
    updated_at, which every change of a server bumps (the store sets it in the change's
    transaction), and by what the links and hostId are made of; the addresses (ports
    change apart from their server) are rendered each time and put in front."""

    def __init__(self, max_entries: int = 8192) -> None:
        self.max_entries = max_entries
        self._kept: dict[UUID, tuple[tuple[object, ...], str]] = {}

    def render(self, servers: Iterable[Server], urls: Urls, host: str,
               nics: dict[UUID, dict[str, list[dict[str, Any]]]], *, admin: bool = False) -> str:
        """The servers' detail views, as the JSON text of a list's items (no brackets);
        `admin`: with the admin-only attributes."""
        where = (urls.base, urls.project, host, admin)
        parts = []
        for server in servers:
            key = (server.updated_at, where)
            kept = self._kept.get(server.id)
            if kept is None or kept[0] != key:
                detail = server_detail(server, urls, host, admin=admin)
                del detail["addresses"]
                kept = (key, to_json(detail)[1:])  # from the first key on: '"id":...}'
                if len(self._kept) >= self.max_entries:
                    self._kept.clear()  # deleted servers' entries go too; cheap to redo
                self._kept[server.id] = kept
            addresses = nics.get(server.id)
            parts.append('{"addresses":' + (to_json(addresses) if addresses else "{}") + ","
                         + kept[1])
        return ",".join(parts)


class ListAnswers:
    """Whole list answers, kept for the store revision they were read at: while nothing
    changed (every committed write moves the revision on, ports included), the same
    request (URL, project, admin or not) gets the same bytes with no query and no render.
    Only the latest revision's few answers are kept."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._revision: int | None = None
        self._kept: dict[tuple[object, ...], str] = {}

    def get(self, revision: int, key: tuple[object, ...]) -> str | None:
        return self._kept.get(key) if revision == self._revision else None

    def put(self, revision: int, key: tuple[object, ...], body: str) -> None:
        if revision != self._revision or len(self._kept) >= self.max_entries:
            self._kept.clear()
            self._revision = revision
        self._kept[key] = body
