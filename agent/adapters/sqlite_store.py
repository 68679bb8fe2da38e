"""The Store port on SQLite (WAL): servers, jobs and status events in one local file.

One connection, guarded by a lock: the daemon calls the store from `asyncio.to_thread`
workers, and SQLite serialises writers anyway, so a single connection is both simple and
correct. Every public method is exactly one transaction (`BEGIN IMMEDIATE` for writers, so
a writer takes the write lock up front and never fails half-way on a lock upgrade).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from agent.adapters import sqlite_keypairs, sqlite_ports
from agent.adapters.sqlite_job_life import JobLife
from agent.adapters.sqlite_schema import migrate
from agent.errors import InvalidInput, ServerNotFound, StoreError
from agent.model.job import Job, JobStatus, StatusEvent
from agent.model.keypair import Keypair
from agent.model.network import Port
from agent.model.server import Server
from agent.model.states import TaskState, VmState
from agent.ports import (
    NewServer,
    ServerExpectation,
    check_change_keys,
    check_expect,
    check_new_server,
)

_BUSY_TIMEOUT_S = 5.0
_SERVER_FIELDS = frozenset(Server.model_fields)
_SERVER_FIXED = frozenset({"id", "project_id", "created_at", "updated_at", "reservation_id"})
_JOB_FIELDS = frozenset(Job.model_fields)
_JOB_FIXED = frozenset({"id", "server_id", "kind", "created_at", "updated_at"})

_INSERT_SERVER = """INSERT INTO servers (id, project_id, user_id, name, image_id, flavor_id,
    vm_state, task_state, power_state, progress, metadata, access_ipv4, access_ipv6,
    shutdown_terminate, fault, created_at, updated_at, launched_at, deleted_at, reservation_id,
    security_groups, scheduler_hints, key_name, key_data)
  VALUES (:id, :project_id, :user_id, :name, :image_id, :flavor_id, :vm_state, :task_state,
    :power_state, :progress, :metadata, :access_ipv4, :access_ipv6, :shutdown_terminate,
    :fault, :created_at, :updated_at, :launched_at, :deleted_at, :reservation_id,
    :security_groups, :scheduler_hints, :key_name, :key_data)"""
_UPDATE_SERVER = """UPDATE servers SET user_id = :user_id, name = :name, image_id = :image_id,
    flavor_id = :flavor_id, vm_state = :vm_state, task_state = :task_state,
    power_state = :power_state, progress = :progress, metadata = :metadata,
    access_ipv4 = :access_ipv4, access_ipv6 = :access_ipv6,
    shutdown_terminate = :shutdown_terminate, key_name = :key_name, key_data = :key_data,
    fault = :fault, updated_at = :updated_at,
    launched_at = :launched_at, deleted_at = :deleted_at,
    security_groups = :security_groups, scheduler_hints = :scheduler_hints
  WHERE id = :id"""
_INSERT_JOB = """INSERT INTO jobs (id, server_id, kind, status, step, payload, error, attempts,
    created_at, updated_at)
  VALUES (:id, :server_id, :kind, :status, :step, :payload, :error, :attempts, :created_at,
    :updated_at)"""
_UPDATE_JOB = """UPDATE jobs SET status = :status, step = :step, payload = :payload,
    error = :error, attempts = :attempts, updated_at = :updated_at WHERE id = :id"""
_INSERT_EVENT = """INSERT INTO events (server_id, project_id, old_status, new_status,
    power_state, cause, at) VALUES (?, ?, ?, ?, ?, ?, ?)"""


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(dt: datetime | None) -> str | None:
    """Fixed-width ISO-8601 UTC text, so text order is time order."""
    if dt is None:
        return None
    if dt.utcoffset() is None:
        raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def _server_params(s: Server) -> dict[str, Any]:
    fault = None
    if s.fault is not None:
        fault = json.dumps({"code": s.fault.code, "message": s.fault.message,
                            "created": _ts(s.fault.created)})
    return {
        "id": str(s.id), "project_id": s.project_id, "user_id": s.user_id, "name": s.name,
        "image_id": str(s.image_id), "flavor_id": s.flavor_id, "vm_state": s.vm_state.value,
        "task_state": s.task_state.value if s.task_state else None,
        "power_state": int(s.power_state), "progress": s.progress,
        "metadata": json.dumps(s.metadata, sort_keys=True), "access_ipv4": s.access_ipv4,
        "access_ipv6": s.access_ipv6, "shutdown_terminate": int(s.shutdown_terminate),
        "key_name": s.key_name, "key_data": s.key_data, "fault": fault,
        "created_at": _ts(s.created_at), "updated_at": _ts(s.updated_at),
        "launched_at": _ts(s.launched_at), "deleted_at": _ts(s.deleted_at),
        "reservation_id": s.reservation_id,
        "security_groups": json.dumps(list(s.security_groups)),
        "scheduler_hints": json.dumps(s.scheduler_hints, sort_keys=True),
    }


def _row_server(row: sqlite3.Row) -> Server:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    data["fault"] = json.loads(data["fault"]) if data["fault"] else None
    data["shutdown_terminate"] = bool(data["shutdown_terminate"])
    data["security_groups"] = tuple(json.loads(data["security_groups"]))
    data["scheduler_hints"] = json.loads(data["scheduler_hints"])
    return Server.model_validate(data)


def _job_params(j: Job) -> dict[str, Any]:
    try:
        payload = json.dumps(j.payload, sort_keys=True)
    except (TypeError, ValueError) as e:  # the message names no value, only the type
        raise ValueError(f"job {j.id}: payload is not JSON-serialisable ({type(e).__name__})") from None
    return {"id": str(j.id), "server_id": str(j.server_id), "kind": j.kind.value,
            "status": j.status.value, "step": j.step, "payload": payload, "error": j.error,
            "attempts": j.attempts, "created_at": _ts(j.created_at), "updated_at": _ts(j.updated_at)}


def _truncate_wal(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and truncate it to zero bytes, so that frames holding
    old page images (a payload before it was cleared) are gone from the -wal file. Best
    effort: a reader in another process holding it back (SQLite then reports busy), or a
    full disk, leaves it for the next clear or start; it never fails what called it."""
    with suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def _row_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["payload"] = json.loads(data["payload"])
    return Job.model_validate(data)




def _apply_server_changes(current: Server, changes: dict[str, Any], now: datetime) -> Server:
    """The server with `changes` applied (validated), updated_at=now and, when it has just
    become deleted, deleted_at=now unless given."""
    new = Server.model_validate({**current.model_dump(), **changes, "updated_at": now})
    if new.vm_state is VmState.DELETED and new.deleted_at is None:
        new = new.model_copy(update={"deleted_at": now})
    return new


def read_server_ids(path: Path) -> set[UUID]:
    """Every server the database at `path` has a row for, deleted ones too, read without
    writing anything (doctor runs beside the daemon). No file or no schema yet: none."""
    if not Path(path).exists():
        return set()
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                               timeout=_BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open state database {path}: {e}") from e
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'servers'").fetchone() is None:
            return set()
        return {UUID(row[0]) for row in conn.execute("SELECT id FROM servers")}
    except sqlite3.Error as e:
        raise StoreError(f"state database {path}: cannot read servers: {e}") from e
    finally:
        conn.close()


class SqliteStore(JobLife):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._event_listener: Callable[[], None] | None = None
        self._appended = False  # the current transaction appended events
        # Committed write transactions since start (each one fsyncs the WAL): a metric.
        self.write_transactions = 0
        # Rows already validated into Servers, by id: a row read again unchanged (the
        # whole row equal: any change differs in updated_at at least) gives the same frozen
        # Server without validating it again, so a list of 1,000 costs a tuple compare each.
        self._parsed: dict[str, tuple[tuple[Any, ...], Server]] = {}
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create the file ourselves with 0600 (job payloads may hold secrets) before
            # SQLite does; its -wal and -shm files copy the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            if self.path.stat().st_mode & 0o077:
                self.path.chmod(0o600)
        except OSError as e:
            raise StoreError(f"cannot create state database {self.path}: {e.strerror}") from e
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"state database {self.path}: cannot use WAL (journal_mode={mode})")
            # FULL, not NORMAL: with WAL, NORMAL can lose the last commits on power loss.
            # The API answers 202 only after a job is committed ("durable first"), so a
            # commit must survive a power cut; the cost is one fsync of the WAL per commit.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Deleted and overwritten content (a cleared job payload: file contents, a
            # password hash) is zeroed in the pages and the freelist, not left as free space.
            conn.execute("PRAGMA secure_delete = ON")
            migrate(conn, str(self.path))
            _truncate_wal(conn)  # payloads cleared by a run killed before its checkpoint
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot open state database {self.path}: {e}") from e
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _tx(self, what: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction; rolled back on any error. sqlite3 errors become StoreError:
        SQLite's messages name tables and columns, never bound values (payloads)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError("state database is closed")
            try:
                self._appended = False
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
                if write:
                    self.write_transactions += 1
                appended = self._appended
            except BaseException as e:
                if conn.in_transaction:
                    # A failed ROLLBACK means SQLite already rolled back (e.g. SQLITE_FULL).
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    code = getattr(e, "sqlite_errorname", "")
                    raise StoreError(f"state database: {what} failed: {e}"
                                     + (f" ({code})" if code else "")) from e
                raise
        # Outside the lock: the listener may read the new events at once.
        if appended and self._event_listener is not None:
            self._event_listener()

    def _server(self, row: sqlite3.Row) -> Server:
        """The row as a Server, validated once per version of the row."""
        values = tuple(row)
        cached = self._parsed.get(row["id"])
        if cached is None or cached[0] != values:
            cached = (values, _row_server(row))
            self._parsed[row["id"]] = cached
        server = cached[1]  # frozen; its one mutable field is copied for the caller
        return server.model_copy(update={"metadata": dict(server.metadata)})

    def _load(self, conn: sqlite3.Connection, server_id: UUID) -> Server:
        row = conn.execute("SELECT * FROM servers WHERE id = ?", (str(server_id),)).fetchone()
        if row is None:
            raise ServerNotFound(f"server {server_id} not found")
        return self._server(row)

    def _append_event(self, conn: sqlite3.Connection, server: Server, old_status: str | None,
                      cause: str, at: datetime) -> None:
        self._appended = True
        conn.execute(_INSERT_EVENT, (str(server.id), server.project_id, old_status,
                                     server.status.value, int(server.power_state), cause, _ts(at)))

    def _change(self, conn: sqlite3.Connection, current: Server, changes: dict[str, Any],
                cause: str) -> Server:
        now = _now()
        new = _apply_server_changes(current, changes, now)
        conn.execute(_UPDATE_SERVER, _server_params(new))
        if new.status != current.status:
            self._append_event(conn, new, current.status.value, cause, now)
        return self._load(conn, current.id)  # as stored: datetimes in UTC

    # -- servers --------------------------------------------------------------------------

    def create_server(self, server: Server, job: Job, ports: Sequence[Port] = ()) -> None:
        self.create_servers([NewServer(server, job, tuple(ports))])

    def create_servers(self, batch: Sequence[NewServer]) -> None:
        for new in batch:
            check_new_server(new)
        rows = [(_server_params(n.server), _job_params(n.job)) for n in batch]
        with self._tx("create server", write=True) as conn:
            for new, (params, job_params) in zip(batch, rows, strict=True):
                conn.execute(_INSERT_SERVER, params)
                conn.execute(_INSERT_JOB, job_params)
                for port in new.ports:  # the server's NICs: all or none
                    if port.created_by_agent:
                        sqlite_ports.insert(conn, port)
                    else:
                        sqlite_ports.bind(conn, port)
                self._append_event(conn, new.server, None, "create", _now())

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
            params.append(_ts(changes_since))
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
            sql = f"SELECT * FROM servers{scope} ORDER BY created_at DESC, id DESC"  # noqa: S608
            if limit is not None:
                sql += " LIMIT ?"
                params.append(max(0, limit))
            rows = conn.execute(sql, params).fetchall()
            return [self._server(r) for r in rows]

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

    def update_server(self, server_id: UUID, changes: dict[str, Any], *, cause: str,
                      expect: ServerExpectation | None = None) -> Server:
        check_change_keys(changes, _SERVER_FIELDS, _SERVER_FIXED, "server")
        with self._tx("update server", write=True) as conn:
            current = self._load(conn, server_id)
            check_expect(current, expect)
            return self._change(conn, current, changes, cause)

    # -- jobs -----------------------------------------------------------------------------

    def add_job(self, job: Job, server_changes: dict[str, Any] | None = None, *,
                cause: str = "", expect: ServerExpectation | None = None) -> Server:
        check_change_keys(server_changes or {}, _SERVER_FIELDS, _SERVER_FIXED, "server")
        job_params = _job_params(job)
        with self._tx("add job", write=True) as conn:
            current = self._load(conn, job.server_id)
            check_expect(current, expect)
            conn.execute(_INSERT_JOB, job_params)
            if server_changes:
                current = self._change(conn, current, server_changes, cause)
            return current

    def get_job(self, job_id: UUID) -> Job | None:
        with self._tx("get job", write=False) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (str(job_id),)).fetchone()
        return _row_job(row) if row is not None else None

    def update_job(self, job_id: UUID, changes: dict[str, Any]) -> Job:
        check_change_keys(changes, _JOB_FIELDS, _JOB_FIXED, "job")
        with self._tx("update job", write=True) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (str(job_id),)).fetchone()
            if row is None:
                raise StoreError(f"job {job_id} not found")
            old = _row_job(row)
            new = Job.model_validate({**old.model_dump(), **changes, "updated_at": _now()})
            conn.execute(_UPDATE_JOB, _job_params(new))
            stored = _row_job(conn.execute("SELECT * FROM jobs WHERE id = ?", (str(job_id),)).fetchone())
        if old.payload and not new.payload:
            self._scrub_wal()
        return stored

    # -- for the job runner's writes (sqlite_job_life.JobLife) ----------------------------

    def _load_job(self, conn: sqlite3.Connection, job_id: UUID) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (str(job_id),)).fetchone()
        if row is None:
            raise StoreError(f"job {job_id} not found")
        return _row_job(row)

    def _write_job(self, conn: sqlite3.Connection, new: Job) -> Job:
        conn.execute(_UPDATE_JOB, _job_params(new))
        return self._load_job(conn, new.id)

    def _after_job_write(self, old: Job, new: Job) -> None:
        if old.payload and not new.payload:
            self._scrub_wal()

    def _check_server_changes(self, changes: dict[str, Any]) -> None:
        check_change_keys(changes, _SERVER_FIELDS, _SERVER_FIXED, "server")

    def _scrub_wal(self) -> None:
        """After a payload was cleared: its old bytes are zeroed in the database (secure_delete)
        but still in the WAL's frames until a checkpoint; truncate the WAL now."""
        with self._lock:
            if self._conn is not None:
                _truncate_wal(self._conn)

    def unfinished_jobs(self) -> list[Job]:
        with self._tx("list unfinished jobs", write=False) as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY created_at, rowid",
                                (JobStatus.QUEUED.value, JobStatus.RUNNING.value)).fetchall()
        return [_row_job(r) for r in rows]

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

    def webhook_cursor(self, url: str) -> int:
        with self._tx("read webhook cursor", write=True) as conn:
            row = conn.execute("SELECT seq FROM webhook_cursors WHERE url = ?", (url,)).fetchone()
            if row is not None:
                return int(row[0])
            head = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            conn.execute("INSERT INTO webhook_cursors (url, seq, updated_at) VALUES (?, ?, ?)",
                         (url, head, _ts(_now())))
            return head

    def advance_webhook_cursor(self, url: str, seq: int) -> None:
        with self._tx("advance webhook cursor", write=True) as conn:
            conn.execute("INSERT INTO webhook_cursors (url, seq, updated_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (url) DO UPDATE SET seq = MAX(seq, excluded.seq),"
                         " updated_at = excluded.updated_at", (url, seq, _ts(_now())))

    # -- ports ----------------------------------------------------------------------------

    def add_port(self, port: Port) -> None:
        with self._tx("add port", write=True) as conn:
            sqlite_ports.insert(conn, port)

    def get_port(self, port_id: UUID) -> Port | None:
        with self._tx("get port", write=False) as conn:
            return sqlite_ports.get(conn, port_id)

    def list_ports(self, *, network_id: UUID | None = None, device_id: str | None = None,
                   project_id: str | None = None) -> list[Port]:
        with self._tx("list ports", write=False) as conn:
            return sqlite_ports.select(conn, network_id, device_id, project_id)

    def set_port_status(self, port_ids: Sequence[UUID], status: str) -> None:
        with self._tx("set port status", write=True) as conn:
            sqlite_ports.set_status(conn, port_ids, status)

    def delete_port(self, port_id: UUID) -> Port:
        with self._tx("delete port", write=True) as conn:
            return sqlite_ports.delete(conn, port_id)

    def release_ports(self, device_id: str) -> list[Port]:
        with self._tx("release ports", write=True) as conn:
            return sqlite_ports.release(conn, device_id)

    # -- keypairs -------------------------------------------------------------------------

    def add_keypair(self, keypair: Keypair) -> Keypair:
        with self._tx("add keypair", write=True) as conn:
            return sqlite_keypairs.insert(conn, keypair)

    def get_keypair(self, user_id: str, name: str) -> Keypair | None:
        with self._tx("get keypair", write=False) as conn:
            return sqlite_keypairs.get(conn, user_id, name)

    def list_keypairs(self, user_id: str) -> list[Keypair]:
        with self._tx("list keypairs", write=False) as conn:
            return sqlite_keypairs.select(conn, user_id)

    def delete_keypair(self, user_id: str, name: str) -> Keypair:
        with self._tx("delete keypair", write=True) as conn:
            return sqlite_keypairs.delete(conn, user_id, name)
