"""The controller's hosts on SQLite (HostRegistry, issue 12): each host's last heartbeat,
whether it takes new servers, and the last of its events applied. Part of SqliteStore
(a mixin, for the file's size): each write is one request on the store's writer thread.

A host's event is applied with its seq in ONE transaction (apply_host_event), so a
controller killed between the two can never apply an event twice nor skip one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agent.adapters import sqlite_ports
from agent.adapters.sqlite_rows import ts
from agent.errors import HostNotFound
from agent.model.fleet import Heartbeat, HostRecord

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from agent.model.server import Server

_UPSERT_HEARTBEAT = """INSERT INTO hosts (name, heartbeat, heartbeat_at) VALUES (?, ?, ?)
  ON CONFLICT (name) DO UPDATE SET heartbeat = excluded.heartbeat,
                                   heartbeat_at = excluded.heartbeat_at"""
_UPSERT_SEQ = """INSERT INTO hosts (name, last_event_seq) VALUES (?, ?)
  ON CONFLICT (name) DO UPDATE SET last_event_seq = excluded.last_event_seq"""


def _record(row: sqlite3.Row) -> HostRecord:
    return HostRecord(
        name=row["name"], enabled=bool(row["enabled"]), disabled_reason=row["disabled_reason"],
        heartbeat=Heartbeat.model_validate_json(row["heartbeat"]) if row["heartbeat"] else None,
        heartbeat_at=datetime.fromisoformat(row["heartbeat_at"]) if row["heartbeat_at"] else None,
        last_event_seq=row["last_event_seq"])


def _get(conn: sqlite3.Connection, name: str) -> HostRecord | None:
    row = conn.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
    return _record(row) if row is not None else None


class HostRows:
    if TYPE_CHECKING:  # provided by SqliteStore
        def _tx(self, what: str, *, write: bool) -> AbstractContextManager[sqlite3.Connection]: ...
        def _change(self, conn: sqlite3.Connection, current: Server, changes: dict[str, Any],
                    cause: str) -> Server: ...
        def _check_server_changes(self, changes: dict[str, Any]) -> None: ...
        def _server(self, row: sqlite3.Row) -> Server: ...
        async def _write(self, what: str, body: Callable[..., Any], *args: Any) -> Any: ...

    def list_hosts(self) -> list[HostRecord]:
        with self._tx("list hosts", write=False) as conn:
            return [_record(r) for r in conn.execute("SELECT * FROM hosts ORDER BY name")]

    def get_host(self, name: str) -> HostRecord | None:
        with self._tx("get host", write=False) as conn:
            return _get(conn, name)

    async def record_heartbeat(self, heartbeat: Heartbeat, received_at: datetime) -> HostRecord:
        if received_at.utcoffset() is None:
            raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
        return await self._write("record heartbeat", self._record_heartbeat, heartbeat,
                                 ts(received_at))

    def _record_heartbeat(self, heartbeat: Heartbeat, received_at: str) -> HostRecord:
        with self._tx("record heartbeat", write=True) as conn:
            conn.execute(_UPSERT_HEARTBEAT, (heartbeat.host, heartbeat.model_dump_json(), received_at))
            found = _get(conn, heartbeat.host)
        assert found is not None  # just written, in this transaction
        return found

    async def set_host_enabled(self, name: str, enabled: bool,
                               reason: str | None = None) -> HostRecord:
        return await self._write("set host enabled", self._set_host_enabled, name, enabled, reason)

    def _set_host_enabled(self, name: str, enabled: bool, reason: str | None) -> HostRecord:
        with self._tx("set host enabled", write=True) as conn:
            conn.execute("UPDATE hosts SET enabled = ?, disabled_reason = ? WHERE name = ?",
                         (int(enabled), None if enabled else reason, name))
            found = _get(conn, name)
        if found is None:
            raise HostNotFound(f"Compute host {name} could not be found.")
        return found

    async def apply_host_event(self, host: str, seq: int, server_id: UUID,
                               changes: dict[str, Any] | None, *, cause: str,
                               release_ports: bool = False) -> Server | None:
        self._check_server_changes(changes or {})
        return await self._write("apply host event", self._apply_host_event, host, seq,
                                 server_id, dict(changes or {}), cause, release_ports)

    def _apply_host_event(self, host: str, seq: int, server_id: UUID, changes: dict[str, Any],
                          cause: str, release_ports: bool) -> Server | None:
        with self._tx("apply host event", write=True) as conn:
            conn.execute(_UPSERT_SEQ, (host, seq))
            row = conn.execute("SELECT * FROM servers WHERE id = ? AND host = ?",
                               (str(server_id), host)).fetchone()
            if row is None:
                return None
            server = self._server(row)
            if changes:
                server = self._change(conn, server, changes, cause)
            if release_ports:
                sqlite_ports.release(conn, str(server_id))
            return server
