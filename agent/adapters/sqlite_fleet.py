"""Fleet mode on SQLite (issue 12): a job the controller made, taken in (adopt_job), and
the snapshot events a controller asks for after a gap. Part of SqliteStore (a mixin, for
the file's size): each write is one request on the store's writer thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agent.adapters import sqlite_ports
from agent.adapters.sqlite_rows import INSERT_JOB, INSERT_SERVER, job_params, server_params, utcnow
from agent.model.fleet import JobTicket
from agent.model.job import JobKind
from agent.model.network import Port
from agent.protocols import adopted_server_changes, check_ticket

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from agent.model.server import Server


def _drop_free_leftovers(conn: sqlite3.Connection, port: Port) -> None:
    """In fleet mode the controller owns ports: a free port still in this store (a user's
    port detached when its server was deleted here) is a leftover. One that has the new
    port's id, address or MAC goes, so the controller's allocation is taken as it is; a
    bound one stays and the insert refuses (IpAddressInUse, ...)."""
    conn.execute("DELETE FROM ports WHERE device_id = '' AND (id = ? OR mac = ?"
                 " OR (network_id = ? AND ip = ?))",
                 (str(port.id), port.mac, str(port.network_id), str(port.ip)))


class FleetAdoption:
    if TYPE_CHECKING:  # provided by SqliteStore
        def _tx(self, what: str, *, write: bool) -> AbstractContextManager[sqlite3.Connection]: ...
        def _load(self, conn: sqlite3.Connection, server_id: UUID) -> Server: ...
        def _server(self, row: sqlite3.Row) -> Server: ...
        def _change(self, conn: sqlite3.Connection, current: Server, changes: dict[str, Any],
                    cause: str) -> Server: ...
        def _append_event(self, conn: sqlite3.Connection, server: Server, old_status: str | None,
                          cause: str, at: datetime) -> None: ...
        async def _write(self, what: str, body: Callable[..., Any], *args: Any) -> Any: ...

    async def adopt_job(self, ticket: JobTicket) -> bool:
        check_ticket(ticket)
        return bool(await self._write("adopt job", self._adopt, ticket, server_params(ticket.server),
                                      job_params(ticket.job)))

    def _adopt(self, ticket: JobTicket, server_row: dict[str, Any], job_row: dict[str, Any]) -> bool:
        with self._tx("adopt job", write=True) as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (str(ticket.job.id),)).fetchone():
                return False
            held = conn.execute("SELECT 1 FROM servers WHERE id = ?",
                                (str(ticket.server.id),)).fetchone() is not None
            if ticket.job.kind is JobKind.CREATE and not held:
                conn.execute(INSERT_SERVER, server_row)
                conn.execute(INSERT_JOB, job_row)
                for port in ticket.ports:  # allocated and bound by the controller: as given
                    _drop_free_leftovers(conn, port)
                    sqlite_ports.insert(conn, port)
                self._append_event(conn, ticket.server, None, "create", utcnow())
                return True
            current = self._load(conn, ticket.server.id)  # ServerNotFound: not this host's
            conn.execute(INSERT_JOB, job_row)
            changes = adopted_server_changes(current, ticket.server)
            if changes:
                self._change(conn, current, changes, f"{ticket.job.kind.value} requested")
            return True

    async def append_snapshot_events(self, after_seq: int, cause: str = "snapshot") -> int:
        return int(await self._write("snapshot events", self._snapshot_events, after_seq, cause))

    def _snapshot_events(self, after_seq: int, cause: str) -> int:
        with self._tx("snapshot events", write=True) as conn:
            rows = conn.execute(
                "SELECT * FROM servers WHERE vm_state != 'deleted'"
                " OR id IN (SELECT server_id FROM events WHERE seq > ?)"
                " ORDER BY created_at, id", (after_seq,)).fetchall()
            now = utcnow()
            for row in rows:
                server = self._server(row)
                self._append_event(conn, server, server.status.value, cause, now)
            return len(rows)
