"""MemoryStore's fleet mode (issue 12): adopt_job and append_snapshot_events, as
agent/adapters/sqlite_fleet.py does them (the Store contract suite proves both)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.model.fleet import JobTicket
from agent.model.job import JobKind
from agent.model.states import VmState
from agent.protocols import adopted_server_changes, check_ticket

if TYPE_CHECKING:
    from tests.unit.fakes.store import MemoryStore


class FleetAdoptionMixin:
    async def adopt_job(self: MemoryStore, ticket: JobTicket) -> bool:  # type: ignore[misc]
        from tests.unit.fakes.store import _now, _stored_job, _stored_server, _turn

        check_ticket(ticket)
        await _turn()
        with self._writing():
            self._check_open()
            if ticket.job.id in self._jobs:
                return False
            events: list = []
            if ticket.job.kind is JobKind.CREATE and ticket.server.id not in self._servers:
                # The server, its job and its ports as given (already bound): all or none.
                new_ports = dict(self._ports)
                for port in ticket.ports:  # free leftovers clashing with it go (sqlite_fleet)
                    for old in list(new_ports.values()):
                        if not old.bound and (old.id == port.id or old.mac == port.mac or (
                                old.network_id == port.network_id and old.ip == port.ip)):
                            del new_ports[old.id]
                    self._insert_port(new_ports, port)
                server = _stored_server(ticket.server)
                events.append(self._event(server, None, "create", _now(), events))
                self._ports = new_ports
            else:
                current = self._load(ticket.server.id)
                changes = adopted_server_changes(current, ticket.server)
                server = (self._changed(current, changes, f"{ticket.job.kind.value} requested",
                                        events) if changes else current)
            self._servers[server.id] = server
            self._jobs[ticket.job.id] = _stored_job(ticket.job)
            self._append_events(events)
            return True

    async def append_snapshot_events(self: MemoryStore, after_seq: int,  # type: ignore[misc]
                                     cause: str = "snapshot") -> int:
        from tests.unit.fakes.store import _now, _turn

        await _turn()
        with self._writing():
            self._check_open()
            recent = {e.server_id for e in self._events if e.seq > after_seq}
            servers = sorted((s for s in self._servers.values()
                              if s.vm_state is not VmState.DELETED or s.id in recent),
                             key=lambda s: (s.created_at, s.id))
            events: list = []
            now = _now()
            for server in servers:
                events.append(self._event(server, server.status.value, cause, now, events))
            self._append_events(events)
            return len(events)
