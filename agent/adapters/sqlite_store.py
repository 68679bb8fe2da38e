"""The Store port on SQLite (WAL): servers, jobs and status events in one local file.

Two connections. Writes are `async` and go to one writer thread that owns the write
connection and commits whatever is queued together (group commit, see sqlite_writer): the
event loop never waits on an fsync, and 8 builds plus API writes cost one fsync per group,
not one per write. Reads are synchronous on their own connection behind a lock: WAL lets
them run while the writer commits, and the lock is never held across an fsync. Every
public method is still exactly one transaction (a write is one savepoint of a group: it
commits or fails alone).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from agent.adapters import sqlite_ports
from agent.adapters.sqlite_catalogs import CatalogRows
from agent.adapters.sqlite_fleet import FleetAdoption
from agent.adapters.sqlite_hosts import HostRows
from agent.adapters.sqlite_job_life import JobLife
from agent.adapters.sqlite_open import connect, open_writer, read_server_ids, truncate_wal
from agent.adapters.sqlite_rows import (
    INSERT_EVENT,
    INSERT_JOB,
    INSERT_SERVER,
    UPDATE_SERVER,
    apply_server_changes,
    job_params,
    row_server,
    server_params,
    ts,
    utcnow,
)
from agent.adapters.sqlite_writer import GroupWriter, as_store_error
from agent.errors import InvalidInput, ServerNotFound, StoreError
from agent.model.job import Job, StatusEvent
from agent.model.network import Port
from agent.model.server import Server
from agent.model.states import TaskState, VmState
from agent.protocols import (
    NewServer,
    ServerExpectation,
    check_change_keys,
    check_expect,
    check_new_server,
)

__all__ = ["SqliteStore", "read_server_ids"]  # read_server_ids: doctor's look, from here

_SERVER_FIELDS = frozenset(Server.model_fields)
_SERVER_FIXED = frozenset({"id", "project_id", "created_at", "updated_at", "reservation_id"})

_IN_CHUNK = 500  # ids per "id IN (...)": well under SQLite's 32,766 bound variables


def _for_caller(server: Server) -> Server:
    """A cached Server for a caller: frozen, but its one mutable field (metadata) copied."""
    return server.model_copy(update={"metadata": dict(server.metadata)})


class SqliteStore(JobLife, FleetAdoption, HostRows, CatalogRows):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._event_listener: Callable[[], None] | None = None
        # Each server as last validated, by id, with the updated_at of that version (every
        # change of a server sets it, in its transaction; the API's DetailFragments rely on
        # that too): a row read again unchanged is not validated again, and a list reads
        # whole only the rows changed since (_listed).
        self._parsed: dict[str, tuple[str, Server]] = {}
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create the file ourselves with 0600 (job payloads may hold secrets) before
            # SQLite does; its -wal and -shm files copy the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            if self.path.stat().st_mode & 0o077:
                self.path.chmod(0o600)
        except OSError as e:
            raise StoreError(f"cannot create state database {self.path}: {e.strerror}") from e
        try:
            writer = open_writer(self.path)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open state database {self.path}: {e}") from e
        try:
            self._reader = connect(self.path)
            # The reader never writes: a bug that tries fails loudly, not off the writer.
            self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as e:
            writer.close()
            raise StoreError(f"cannot open state database {self.path}: {e}") from e
        self._writer_conn = writer
        self._writer = GroupWriter(writer, self._after_commit)

    @property
    def write_transactions(self) -> int:
        """Committed write transactions since start (each one fsyncs the WAL): a metric.
        One transaction commits a group of write requests (write_requests)."""
        return self._writer.commits

    @property
    def write_requests(self) -> int:
        """Committed write requests (calls of a write method) since start."""
        return self._writer.requests

    def close(self) -> None:
        """Commit what is queued, stop the writer, close both connections. A write after
        close raises StoreError."""
        self._writer.close()
        self._writer_conn.close()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _after_commit(self, conn: sqlite3.Connection, flags: set[str]) -> None:
        """On the writer thread, after a COMMIT, before any of its callers gets an answer."""
        if "scrub" in flags:
            self._scrub_wal(conn)
        if "events" in flags and self._event_listener is not None:
            self._event_listener()

    def _scrub_wal(self, conn: sqlite3.Connection) -> None:
        """A job payload was cleared: its old bytes are zeroed in the database
        (secure_delete) but still in the WAL's frames until a checkpoint: truncate it."""
        truncate_wal(conn)

    async def _write(self, what: str, body: Callable[..., Any], *args: Any) -> Any:
        """Run `body(*args)` on the writer thread as one request of a group commit; its
        result once the commit is durable. `body` gets its connection from
        `self._tx(what, write=True)` (valid only there)."""
        future = self._writer.submit(what, lambda _conn: body(*args))
        return await asyncio.wrap_future(future)

    @contextmanager
    def _tx(self, what: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """On the writer thread (inside a write request): the write connection, already
        in the request's savepoint (the writer rolls it back on any error). Elsewhere a
        read transaction on the reader connection; write=True there is a bug. sqlite3
        errors become StoreError: SQLite's messages name tables and columns, never bound
        values (payloads)."""
        if self._writer.on_writer_thread():
            try:
                yield self._writer_conn
            except sqlite3.Error as e:
                raise as_store_error(what, e) from e
            return
        if write:
            raise RuntimeError(f"{what}: a write runs on the store's writer thread (use _write)")
        with self._read_lock:
            conn = self._reader
            if conn is None:
                raise StoreError("state database is closed")
            try:
                conn.execute("BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise as_store_error(what, e) from e
                raise

    async def _write_op(self, what: str, op: Callable[..., Any], *args: Any) -> Any:
        """`op(conn, *args)` as one write request (sqlite_ports', sqlite_keypairs' helpers)."""
        return await self._write(what, self._in_tx, what, op, *args)

    def _in_tx(self, what: str, op: Callable[..., Any], *args: Any) -> Any:
        with self._tx(what, write=True) as conn:
            return op(conn, *args)

    def _server(self, row: sqlite3.Row) -> Server:
        """The row as a Server, validated once per version of the row."""
        cached = self._parsed.get(row["id"])
        if cached is None or cached[0] != row["updated_at"]:
            cached = (row["updated_at"], row_server(row))
            self._parsed[row["id"]] = cached
        return _for_caller(cached[1])

    def _listed(self, conn: sqlite3.Connection, keys: list[sqlite3.Row]) -> list[Server]:
        """The servers of (id, updated_at) rows listed in this read transaction: only the
        rows changed since they were last parsed are read whole (a list of 1,000 in
        which few changed reads few rows, not 1,000)."""
        stale = [k["id"] for k in keys
                 if (kept := self._parsed.get(k["id"])) is None or kept[0] != k["updated_at"]]
        for start in range(0, len(stale), _IN_CHUNK):
            chunk = stale[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT * FROM servers WHERE id IN ({marks})", chunk):  # noqa: S608
                self._server(row)
        return [_for_caller(self._parsed[k["id"]][1]) for k in keys]

    def _load(self, conn: sqlite3.Connection, server_id: UUID) -> Server:
        row = conn.execute("SELECT * FROM servers WHERE id = ?", (str(server_id),)).fetchone()
        if row is None:
            raise ServerNotFound(f"server {server_id} not found")
        return self._server(row)

    def _append_event(self, conn: sqlite3.Connection, server: Server, old_status: str | None,
                      cause: str, at: datetime) -> None:
        self._writer.note("events")
        conn.execute(INSERT_EVENT, (str(server.id), server.project_id, old_status,
                                     server.status.value, int(server.power_state), cause, ts(at)))

    def _change(self, conn: sqlite3.Connection, current: Server, changes: dict[str, Any],
                cause: str) -> Server:
        now = utcnow()
        new = apply_server_changes(current, changes, now)
        conn.execute(UPDATE_SERVER, server_params(new))
        if new.status != current.status:
            self._append_event(conn, new, current.status.value, cause, now)
        return self._load(conn, current.id)  # as stored: datetimes in UTC

    # -- servers --------------------------------------------------------------------------

    async def create_server(self, server: Server, job: Job, ports: Sequence[Port] = ()) -> None:
        await self.create_servers([NewServer(server, job, tuple(ports))])

    async def create_servers(self, batch: Sequence[NewServer]) -> None:
        for new in batch:
            check_new_server(new)
        rows = [(server_params(n.server), job_params(n.job)) for n in batch]
        await self._write("create server", self._create_servers, list(batch), rows)

    def _create_servers(self, batch: list[NewServer],
                        rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        with self._tx("create server", write=True) as conn:
            for new, (params, job_params) in zip(batch, rows, strict=True):
                conn.execute(INSERT_SERVER, params)
                conn.execute(INSERT_JOB, job_params)
                for port in new.ports:  # the server's NICs: all or none
                    if port.created_by_agent:
                        sqlite_ports.insert(conn, port)
                    else:
                        sqlite_ports.bind(conn, port)
                self._append_event(conn, new.server, None, "create", utcnow())

    def get_server(self, server_id: UUID, project_id: str | None = None) -> Server | None:
        with self._tx("get server", write=False) as conn:
            row = conn.execute("SELECT * FROM servers WHERE id = ?", (str(server_id),)).fetchone()
            if row is None or (project_id is not None and row["project_id"] != project_id):
                return None
            return self._server(row)

    def list_servers(self, project_id: str | None = None, *, changes_since: datetime | None = None,
                     include_deleted: bool = False, image_id: UUID | None = None,
                     flavor_id: str | None = None, reservation_id: str | None = None,
                     marker: UUID | None = None, limit: int | None = None) -> list[Server]:
        where, params = [], []
        for column, value in (("project_id", project_id), ("image_id", image_id),
                              ("flavor_id", flavor_id), ("reservation_id", reservation_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(str(value))
        if changes_since is not None:
            where.append("updated_at >= ?")
            params.append(ts(changes_since))
        elif not include_deleted:
            where.append("vm_state != 'deleted'")
        scope = " WHERE " + " AND ".join(where) if where else ""  # fixed fragments; values bound
        with self._tx("list servers", write=False) as conn:
            if marker is not None:  # the page after it: the marker must be in the list
                found = conn.execute(f"SELECT created_at, id FROM servers{scope}"  # noqa: S608
                                     + (" AND" if where else " WHERE") + " id = ?",
                                     [*params, str(marker)]).fetchone()
                if found is None:
                    raise InvalidInput(f"marker [{marker}] not found", "marker")
                where.append("(created_at < ? OR (created_at = ? AND id < ?))")
                params += [found["created_at"], found["created_at"], found["id"]]
                scope = " WHERE " + " AND ".join(where)
            sql = f"SELECT id, updated_at FROM servers{scope} ORDER BY created_at DESC, id DESC"  # noqa: S608
            if limit is not None:
                sql += " LIMIT ?"
                params.append(max(0, limit))
            return self._listed(conn, conn.execute(sql, params).fetchall())

    def revision(self) -> int:
        """Moves on with every committed write (the write-transaction count): reads made
        after revision() returned see at least that revision's contents."""
        return self.write_transactions

    def server_state_counts(self) -> dict[tuple[VmState, TaskState | None], int]:
        """Servers not deleted, counted by (vm_state, task_state) in SQL: /metrics reads it."""
        with self._tx("count server states", write=False) as conn:
            rows = conn.execute("SELECT vm_state, task_state, COUNT(*) FROM servers"
                                " WHERE vm_state != 'deleted' GROUP BY vm_state, task_state").fetchall()
        return {(VmState(v), TaskState(t) if t else None): int(n) for v, t, n in rows}

    def flavor_counts(self, project_id: str, *, without: UUID | None = None) -> dict[str, int]:
        with self._tx("count servers by flavor", write=False) as conn:
            rows = conn.execute("SELECT flavor_id, COUNT(*) FROM servers WHERE project_id = ?"
                                " AND vm_state != 'deleted' AND id != ? GROUP BY flavor_id",
                                (project_id, str(without) if without else "")).fetchall()
        return {str(f): int(n) for f, n in rows}

    async def update_server(self, server_id: UUID, changes: dict[str, Any], *, cause: str,
                            expect: ServerExpectation | None = None) -> Server:
        check_change_keys(changes, _SERVER_FIELDS, _SERVER_FIXED, "server")
        return await self._write("update server", self._update_server, server_id, dict(changes),
                                 cause, expect)

    def _update_server(self, server_id: UUID, changes: dict[str, Any], cause: str,
                       expect: ServerExpectation | None) -> Server:
        with self._tx("update server", write=True) as conn:
            current = self._load(conn, server_id)
            check_expect(current, expect)
            return self._change(conn, current, changes, cause)

    # -- jobs -----------------------------------------------------------------------------

    async def add_job(self, job: Job, server_changes: dict[str, Any] | None = None, *,
                      cause: str = "", expect: ServerExpectation | None = None) -> Server:
        check_change_keys(server_changes or {}, _SERVER_FIELDS, _SERVER_FIXED, "server")
        return await self._write("add job", self._add_job, job, job_params(job),
                                 dict(server_changes or {}), cause, expect)

    def _add_job(self, job: Job, job_params: dict[str, Any], server_changes: dict[str, Any],
                 cause: str, expect: ServerExpectation | None) -> Server:
        with self._tx("add job", write=True) as conn:
            current = self._load(conn, job.server_id)
            check_expect(current, expect)
            conn.execute(INSERT_JOB, job_params)
            if server_changes:
                current = self._change(conn, current, server_changes, cause)
            return current

    def _check_server_changes(self, changes: dict[str, Any]) -> None:
        check_change_keys(changes, _SERVER_FIELDS, _SERVER_FIXED, "server")

    # get_job, update_job, unfinished_jobs and the job runner's writes: sqlite_job_life

    # -- events ---------------------------------------------------------------------------

    def events_since(self, seq: int, project_id: str | None = None,
                     limit: int = 1000) -> list[StatusEvent]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        with self._tx("read events", write=False) as conn:
            if project_id is None:
                rows = conn.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()
            else:
                rows = conn.execute("SELECT * FROM events WHERE seq > ? AND project_id = ?"
                                    " ORDER BY seq LIMIT ?", (seq, project_id, limit)).fetchall()
        return [StatusEvent.model_validate(dict(r)) for r in rows]

    def set_event_listener(self, listener: Callable[[], None] | None) -> None:
        self._event_listener = listener

    async def webhook_cursor(self, url: str) -> int:
        with self._tx("read webhook cursor", write=False) as conn:
            row = conn.execute("SELECT seq FROM webhook_cursors WHERE url = ?", (url,)).fetchone()
        if row is not None:  # the common case reads only
            return int(row[0])
        return await self._write("read webhook cursor", self._webhook_cursor, url)

    def _webhook_cursor(self, url: str) -> int:
        with self._tx("read webhook cursor", write=True) as conn:
            row = conn.execute("SELECT seq FROM webhook_cursors WHERE url = ?", (url,)).fetchone()
            if row is not None:
                return int(row[0])
            head = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            conn.execute("INSERT INTO webhook_cursors (url, seq, updated_at) VALUES (?, ?, ?)",
                         (url, head, ts(utcnow())))
            return head

    async def advance_webhook_cursor(self, url: str, seq: int) -> None:
        await self._write("advance webhook cursor", self._advance_webhook_cursor, url, seq)

    def _advance_webhook_cursor(self, url: str, seq: int) -> None:
        with self._tx("advance webhook cursor", write=True) as conn:
            conn.execute("INSERT INTO webhook_cursors (url, seq, updated_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (url) DO UPDATE SET seq = MAX(seq, excluded.seq),"
                         " updated_at = excluded.updated_at", (url, seq, ts(utcnow())))
