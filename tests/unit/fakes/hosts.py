"""MemoryStore's hosts (HostRegistry, issue 12), as agent/adapters/sqlite_hosts.py keeps
them: the contract suite tests/integration/test_host_registry_contract.py runs on both.
MemoryHostRegistry: the same hosts alone, for the scheduler's and the host API's tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agent.errors import HostNotFound
from agent.model.fleet import Heartbeat, HostRecord
from agent.model.network import PortStatus
from agent.model.server import Server
from agent.protocols import check_change_keys

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from agent.model.job import StatusEvent
    from agent.model.network import Port


class MemoryHosts:
    if TYPE_CHECKING:  # provided by MemoryStore
        _lock: threading.RLock
        _servers: dict[UUID, Server]
        _ports: dict[UUID, Port]
        def _writing(self) -> AbstractContextManager[None]: ...
        def _check_open(self) -> None: ...
        def _changed(self, current: Server, changes: dict[str, Any], cause: str,
                     pending: list[StatusEvent]) -> Server: ...
        def _append_events(self, events: list[StatusEvent]) -> None: ...

    _hosts: dict[str, HostRecord]  # by name; made in MemoryStore.__init__

    def list_hosts(self) -> list[HostRecord]:
        with self._lock:
            self._check_open()
            return [self._hosts[n] for n in sorted(self._hosts)]

    def get_host(self, name: str) -> HostRecord | None:
        with self._lock:
            self._check_open()
            return self._hosts.get(name)

    async def record_heartbeat(self, heartbeat: Heartbeat, received_at: datetime) -> HostRecord:
        if received_at.utcoffset() is None:
            raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
        # Through JSON, as the database keeps it.
        beat = Heartbeat.model_validate(json.loads(heartbeat.model_dump_json()))
        with self._writing():
            self._check_open()
            hosts = self._hosts
            old = hosts.get(heartbeat.host) or HostRecord(name=heartbeat.host)
            hosts[heartbeat.host] = old.model_copy(update={
                "heartbeat": beat, "heartbeat_at": received_at.astimezone(UTC)})
            return hosts[heartbeat.host]

    async def set_host_enabled(self, name: str, enabled: bool,
                               reason: str | None = None) -> HostRecord:
        with self._writing():
            self._check_open()
            hosts = self._hosts
            if name not in hosts:
                raise HostNotFound(f"Compute host {name} could not be found.")
            hosts[name] = hosts[name].model_copy(update={
                "enabled": enabled, "disabled_reason": None if enabled else reason})
            return hosts[name]

    async def apply_host_event(self, host: str, seq: int, server_id: UUID,
                               changes: dict[str, Any] | None, *, cause: str,
                               release_ports: bool = False) -> Server | None:
        from tests.unit.fakes.store import _SERVER_FIELDS, _SERVER_FIXED  # its own module's

        check_change_keys(changes or {}, _SERVER_FIELDS, _SERVER_FIXED, "server")
        with self._writing():
            self._check_open()
            current = self._servers.get(server_id)
            pending: list[StatusEvent] = []
            new = None
            if current is not None and current.host == host:
                # Validated before anything is kept: a bad change writes nothing.
                new = self._changed(current, changes, cause, pending) if changes else current
            hosts = self._hosts
            hosts[host] = (hosts.get(host) or HostRecord(name=host)).model_copy(
                update={"last_event_seq": seq})
            if new is None:
                return None
            self._servers[server_id] = new
            if release_ports:
                self._release(str(server_id))
            self._append_events(pending)
            return new.model_copy(deep=True)

    def _release(self, device_id: str) -> list[Port]:
        """release_ports' change (the lock held): the agent's ports deleted, the user's
        detached; the ports as they were, in NIC order."""
        mine = sorted((p for p in self._ports.values() if p.device_id == device_id),
                      key=lambda p: (p.device_index, p.created_at, str(p.id)))
        for p in mine:
            if p.created_by_agent:
                del self._ports[p.id]
            else:
                self._ports[p.id] = p.model_copy(update={
                    "device_id": "", "device_owner": "", "device_index": 0,
                    "status": PortStatus.DOWN})
        return mine


class MemoryHostRegistry(MemoryHosts):
    """The HostRegistry alone: hosts, no servers (an event's server is never found)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._hosts = {}
        self._servers = {}
        self._ports = {}

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            yield

    def _check_open(self) -> None:
        pass
