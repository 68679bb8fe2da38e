"""MemoryStore: the Store port in memory (dicts and a lock). It behaves as SqliteStore does,
as tests/integration/test_store_contract.py proves: the same events, compare-and-set,
project scoping, ordering, validation and errors; values round-trip as they would through
the database (datetimes in UTC, payloads through JSON, copies rather than shared dicts)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from agent.errors import ServerNotFound, StaleServer, StoreError
from agent.model.job import Job, JobStatus, StatusEvent
from agent.model.server import Server
from agent.model.states import VmState
from agent.ports import ServerExpectation

_SERVER_FIELDS = frozenset(Server.model_fields)
_SERVER_FIXED = frozenset({"id", "project_id", "created_at", "updated_at"})
_JOB_FIELDS = frozenset(Job.model_fields)
_JOB_FIXED = frozenset({"id", "server_id", "kind", "created_at", "updated_at"})
_SERVER_TIMES = ("created_at", "updated_at", "launched_at", "deleted_at")


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    if dt.utcoffset() is None:
        raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
    return dt.astimezone(UTC)


def _stored_server(s: Server) -> Server:
    """The server as the database would give it back: UTC datetimes, own dicts."""
    data = s.model_dump()
    for key in _SERVER_TIMES:
        data[key] = _utc(data[key])
    if data["fault"] is not None:
        data["fault"]["created"] = _utc(data["fault"]["created"])
    return Server.model_validate(data)


def _stored_job(j: Job) -> Job:
    data = j.model_dump()
    try:
        data["payload"] = json.loads(json.dumps(data["payload"], sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"job {j.id}: payload is not JSON-serialisable ({type(e).__name__})") from None
    data["created_at"], data["updated_at"] = _utc(data["created_at"]), _utc(data["updated_at"])
    return Job.model_validate(data)


def _check_change_keys(changes: dict[str, Any], known: frozenset[str], fixed: frozenset[str],
                       what: str) -> None:
    if unknown := sorted(set(changes) - known):
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}")
    if fixed_ := sorted(set(changes) & fixed):
        raise ValueError(f"{what} field(s) cannot be changed: {', '.join(fixed_)}")


def _check_expect(current: Server, expect: ServerExpectation | None) -> None:
    if expect is None:
        return
    if (current.vm_state, current.task_state) != (expect.vm_state, expect.task_state):
        raise StaleServer(
            f"server {current.id} is vm_state={current.vm_state}, task_state={current.task_state}"
            f" (expected vm_state={expect.vm_state}, task_state={expect.task_state})")


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[UUID, Server] = {}
        self._jobs: dict[UUID, Job] = {}  # insertion order breaks created_at ties
        self._events: list[StatusEvent] = []
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("state database is closed")

    def _load(self, server_id: UUID) -> Server:
        try:
            return self._servers[server_id]
        except KeyError:
            raise ServerNotFound(f"server {server_id} not found") from None

    def _event(self, server: Server, old_status: str | None, cause: str, at: datetime,
               pending: list[StatusEvent]) -> StatusEvent:
        return StatusEvent(seq=len(self._events) + len(pending) + 1, server_id=server.id,
                           project_id=server.project_id, old_status=old_status,
                           new_status=server.status.value, power_state=int(server.power_state),
                           cause=cause, at=at)

    def _changed(self, current: Server, changes: dict[str, Any], cause: str,
                 pending: list[StatusEvent]) -> Server:
        """The changed server (validated, not yet stored); its event, if any, into pending."""
        now = _now()
        new = Server.model_validate({**current.model_dump(), **changes, "updated_at": now})
        if new.vm_state is VmState.DELETED and new.deleted_at is None:
            new = new.model_copy(update={"deleted_at": now})
        new = _stored_server(new)
        if new.status != current.status:
            pending.append(self._event(new, current.status.value, cause, now, pending))
        return new

    # -- servers --------------------------------------------------------------------------

    def create_server(self, server: Server, job: Job) -> None:
        if job.server_id != server.id:
            raise ValueError(f"job {job.id} is for server {job.server_id}, not {server.id}")
        stored, stored_job = _stored_server(server), _stored_job(job)
        with self._lock:
            self._check_open()
            if server.id in self._servers:
                raise StoreError("state database: create server failed: "
                                 "UNIQUE constraint failed: servers.id")
            if job.id in self._jobs:
                raise StoreError("state database: create server failed: "
                                 "UNIQUE constraint failed: jobs.id")
            event = self._event(stored, None, "create", _now(), [])
            self._servers[server.id] = stored
            self._jobs[job.id] = stored_job
            self._events.append(event)

    def get_server(self, server_id: UUID, project_id: str | None = None) -> Server | None:
        with self._lock:
            self._check_open()
            s = self._servers.get(server_id)
        if s is None or (project_id is not None and s.project_id != project_id):
            return None
        return s.model_copy(deep=True)

    def list_servers(self, project_id: str | None = None, *, changes_since: datetime | None = None,
                     include_deleted: bool = False) -> list[Server]:
        since = _utc(changes_since)
        with self._lock:
            self._check_open()
            found = [s for s in self._servers.values()
                     if (project_id is None or s.project_id == project_id)
                     and (s.updated_at >= since if since is not None
                          else include_deleted or s.vm_state is not VmState.DELETED)]
        found.sort(key=lambda s: (s.created_at, str(s.id)), reverse=True)
        return [s.model_copy(deep=True) for s in found]

    def count_servers(self, project_id: str | None = None) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for s in self._servers.values()
                       if s.vm_state is not VmState.DELETED
                       and (project_id is None or s.project_id == project_id))

    def update_server(self, server_id: UUID, changes: dict[str, Any], *, cause: str,
                      expect: ServerExpectation | None = None) -> Server:
        _check_change_keys(changes, _SERVER_FIELDS, _SERVER_FIXED, "server")
        with self._lock:
            self._check_open()
            current = self._load(server_id)
            _check_expect(current, expect)
            pending: list[StatusEvent] = []
            new = self._changed(current, changes, cause, pending)
            self._servers[server_id] = new
            self._events.extend(pending)
            return new.model_copy(deep=True)

    # -- jobs -----------------------------------------------------------------------------

    def add_job(self, job: Job, server_changes: dict[str, Any] | None = None, *,
                cause: str = "", expect: ServerExpectation | None = None) -> Server:
        _check_change_keys(server_changes or {}, _SERVER_FIELDS, _SERVER_FIXED, "server")
        stored_job = _stored_job(job)
        with self._lock:
            self._check_open()
            current = self._load(job.server_id)
            _check_expect(current, expect)
            if job.id in self._jobs:
                raise StoreError("state database: add job failed: UNIQUE constraint failed: jobs.id")
            pending: list[StatusEvent] = []
            new = self._changed(current, server_changes, cause, pending) if server_changes else current
            self._jobs[job.id] = stored_job
            self._servers[new.id] = new
            self._events.extend(pending)
            return new.model_copy(deep=True)

    def get_job(self, job_id: UUID) -> Job | None:
        with self._lock:
            self._check_open()
            j = self._jobs.get(job_id)
        return j.model_copy(deep=True) if j is not None else None

    def update_job(self, job_id: UUID, changes: dict[str, Any]) -> Job:
        _check_change_keys(changes, _JOB_FIELDS, _JOB_FIXED, "job")
        with self._lock:
            self._check_open()
            current = self._jobs.get(job_id)
            if current is None:
                raise StoreError(f"job {job_id} not found")
            new = _stored_job(Job.model_validate({**current.model_dump(), **changes,
                                                  "updated_at": _now()}))
            self._jobs[job_id] = new
            return new.model_copy(deep=True)

    def unfinished_jobs(self) -> list[Job]:
        with self._lock:
            self._check_open()
            found = [j for j in self._jobs.values()
                     if j.status in (JobStatus.QUEUED, JobStatus.RUNNING)]
        found.sort(key=lambda j: j.created_at)  # stable: insertion order breaks ties
        return [j.model_copy(deep=True) for j in found]

    # -- events ---------------------------------------------------------------------------

    def events_since(self, seq: int, project_id: str | None = None,
                     limit: int = 1000) -> list[StatusEvent]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        with self._lock:
            self._check_open()
            found = [e for e in self._events
                     if e.seq > seq and (project_id is None or e.project_id == project_id)]
        return found[:limit]
