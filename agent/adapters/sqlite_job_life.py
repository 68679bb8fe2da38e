"""Jobs on SQLite: reads, the generic update, and the job runner's writes (a job's start,
each step it records with the server's change and its event, compare-and-set on the job's
task; its end; a paused try). Part of SqliteStore (a mixin, for the file's size): each
write is one request on the store's writer thread (sqlite_writer: its own savepoint in a
group commit)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agent.adapters.sqlite_rows import UPDATE_JOB, job_params, row_job
from agent.errors import StoreError
from agent.model.job import Job, JobStatus
from agent.model.states import TaskState
from agent.protocols import check_change_keys, check_task, job_advanced

_JOB_FIELDS = frozenset(Job.model_fields)
_JOB_FIXED = frozenset({"id", "server_id", "kind", "created_at", "updated_at"})

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from agent.adapters.sqlite_writer import GroupWriter
    from agent.model.server import Server


class JobLife:
    if TYPE_CHECKING:  # provided by SqliteStore
        def _tx(self, what: str, *, write: bool) -> AbstractContextManager[sqlite3.Connection]: ...
        def _load(self, conn: sqlite3.Connection, server_id: UUID) -> Server: ...
        def _change(self, conn: sqlite3.Connection, current: Server, changes: dict[str, Any],
                    cause: str) -> Server: ...
        _writer: GroupWriter
        def _check_server_changes(self, changes: dict[str, Any]) -> None: ...
        async def _write(self, what: str, body: Callable[..., Any], *args: Any) -> Any: ...

    def get_job(self, job_id: UUID) -> Job | None:
        with self._tx("get job", write=False) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (str(job_id),)).fetchone()
        return row_job(row) if row is not None else None

    def unfinished_jobs(self) -> list[Job]:
        with self._tx("list unfinished jobs", write=False) as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY created_at, rowid",
                                (JobStatus.QUEUED.value, JobStatus.RUNNING.value)).fetchall()
        return [row_job(r) for r in rows]

    def jobs_of(self, server_id: UUID) -> list[Job]:
        with self._tx("list a server's jobs", write=False) as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE server_id = ? ORDER BY created_at, rowid",
                                (str(server_id),)).fetchall()
        return [row_job(r) for r in rows]

    async def update_job(self, job_id: UUID, changes: dict[str, Any]) -> Job:
        check_change_keys(changes, _JOB_FIELDS, _JOB_FIXED, "job")
        return await self._write("update job", self._update_job_sync, job_id, dict(changes))

    def _update_job_sync(self, job_id: UUID, changes: dict[str, Any]) -> Job:
        with self._tx("update job", write=True) as conn:
            old = self._load_job(conn, job_id)
            stored = self._write_job(conn, Job.model_validate(
                {**old.model_dump(), **changes, "updated_at": datetime.now(UTC)}))
        self._after_job_write(old, stored)
        return stored

    def _load_job(self, conn: sqlite3.Connection, job_id: UUID) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (str(job_id),)).fetchone()
        if row is None:
            raise StoreError(f"job {job_id} not found")
        return row_job(row)

    def _write_job(self, conn: sqlite3.Connection, new: Job) -> Job:
        conn.execute(UPDATE_JOB, job_params(new))
        return self._load_job(conn, new.id)

    def _after_job_write(self, old: Job, new: Job) -> None:
        if old.payload and not new.payload:
            self._writer.note("scrub")  # truncate the WAL after the commit (_after_commit)

    async def start_job(self, job_id: UUID) -> Job:
        return await self._write("start job", self._start_job_sync, job_id)

    def _start_job_sync(self, job_id: UUID) -> Job:
        with self._tx("start job", write=True) as conn:
            old = self._load_job(conn, job_id)
            return self._write_job(conn, old.model_copy(update={
                "status": JobStatus.RUNNING, "attempts": old.attempts + 1, "updated_at": datetime.now(UTC)}))

    async def advance(self, job: Job, step: str, server_changes: dict[str, Any] | None,
                      expect_task_state: TaskState | None, *, cause: str = "",
                      end: bool = False) -> Job:
        return await self._write("advance", self._advance_sync, job, step, server_changes,
                                       expect_task_state, cause, end)

    def _advance_sync(self, job: Job, step: str, server_changes: dict[str, Any] | None,
                      expect_task_state: TaskState | None, cause: str, end: bool) -> Job:
        self._check_server_changes(server_changes or {})
        with self._tx("advance job", write=True) as conn:
            current = self._load(conn, job.server_id)
            check_task(current, expect_task_state)
            if server_changes:
                self._change(conn, current, server_changes, cause or step)
            old = self._load_job(conn, job.id)
            stored = self._write_job(conn, job_advanced(
                old, step, datetime.now(UTC), JobStatus.SUCCEEDED if end else None))
        self._after_job_write(old, stored)
        return stored

    async def end_job(self, job_id: UUID, status: JobStatus, *, error: str = "",
                      server_changes: dict[str, Any] | None = None,
                      expect_task_state: TaskState | None = None, cause: str = "") -> Job:
        return await self._write("end job", self._end_job_sync, job_id, status, error,
                                       server_changes, expect_task_state, cause)

    def _end_job_sync(self, job_id: UUID, status: JobStatus, error: str,
                      server_changes: dict[str, Any] | None,
                      expect_task_state: TaskState | None, cause: str) -> Job:
        self._check_server_changes(server_changes or {})
        with self._tx("end job", write=True) as conn:
            old = self._load_job(conn, job_id)
            if server_changes:
                current = self._load(conn, old.server_id)
                if current.task_state is expect_task_state:
                    self._change(conn, current, server_changes, cause or status.value)
            stored = self._write_job(conn, old.model_copy(update={
                "status": status, "error": error, "payload": {}, "updated_at": datetime.now(UTC)}))
        self._after_job_write(old, stored)
        return stored

    async def pause_job(self, job_id: UUID) -> Job | None:
        return await self._write("pause job", self._pause_job_sync, job_id)

    def _pause_job_sync(self, job_id: UUID) -> Job | None:
        with self._tx("pause job", write=True) as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (str(job_id),)).fetchone() is None:
                return None
            old = self._load_job(conn, job_id)
            return self._write_job(conn, old.model_copy(update={
                "attempts": max(0, old.attempts - 1), "updated_at": datetime.now(UTC)}))

