"""The Store contract for a job's life as the job runner records it (start_job, advance,
end_job, pause_job), proven against SqliteStore and its in-memory twin alike: each is one
transaction, and a step is recorded only while the server still carries the job's task."""

# ruff: noqa: F811 - `store` is the contract suite's fixture, taken as every test's argument
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from agent.errors import StoreError, TakenOver
from agent.model.domain import PowerState
from agent.model.job import JobKind, JobStatus
from agent.model.states import Status, TaskState, VmState
from agent.protocols import Store
from tests.integration.test_store_contract import T0, make_job, make_server, store  # noqa: F401

SECRET = {"admin_pass_hash": "$6$salt$hash"}


async def building(store: Store, **job_kw):
    server = make_server(vm_state=VmState.BUILDING, task_state=TaskState.SPAWNING)
    job = make_job(server.id, payload=dict(SECRET), **job_kw)
    await store.create_server(server, job)
    return server, job


def events(store: Store, server_id: uuid.UUID) -> list[tuple[str | None, str, str]]:
    return [(e.old_status, e.new_status, e.cause) for e in store.events_since(0)
            if e.server_id == server_id]


async def test_start_job_marks_it_running_and_counts_the_try(store: Store) -> None:
    _, job = await building(store)
    first = await store.start_job(job.id)
    assert (first.status, first.attempts) == (JobStatus.RUNNING, 1)
    again = await store.start_job(job.id)
    assert again.attempts == 2 and again.updated_at >= first.updated_at
    assert store.get_job(job.id) == again
    with pytest.raises(StoreError):
        await store.start_job(uuid.uuid4())


async def test_advance_records_the_step_and_the_server_change_in_one_write(
        store: Store) -> None:
    server, job = await building(store, attempts=3)
    job = await store.start_job(job.id)
    before = store.revision()
    got = await store.advance(job, "injected", {"progress": 40}, TaskState.SPAWNING)
    assert store.revision() == before + 1  # one transaction
    assert (got.step, got.status, got.attempts) == ("injected", JobStatus.RUNNING, 1)
    assert got.payload == SECRET  # kept until the job ends
    assert store.get_job(job.id) == got
    assert store.get_server(server.id).progress == 40
    same = await store.advance(got, "injected", None, TaskState.SPAWNING)
    assert same.attempts == 1  # the same step again does not restart the count
    assert events(store, server.id) == [(None, "BUILD", "create")]  # progress is no status


async def test_the_try_count_restarts_only_at_a_new_step(store: Store) -> None:
    _, job = await building(store, step="injected", attempts=2)
    job = await store.start_job(job.id)
    assert job.attempts == 3
    assert (await store.advance(job, "injected", None, TaskState.SPAWNING)).attempts == 3
    assert (await store.advance(job, "domain", None, TaskState.SPAWNING)).attempts == 1


async def test_advance_on_a_server_taken_over_writes_nothing(store: Store) -> None:
    server, job = await building(store)
    job = await store.start_job(job.id)
    await store.update_server(server.id, {"task_state": TaskState.DELETING}, cause="delete")
    before_server, before_events = store.get_server(server.id), events(store, server.id)
    with pytest.raises(TakenOver):
        await store.advance(job, "running", {"vm_state": VmState.ACTIVE, "task_state": None},
                            TaskState.SPAWNING, end=True)
    assert store.get_job(job.id) == job
    assert store.get_server(server.id) == before_server
    assert events(store, server.id) == before_events


async def test_advance_refuses_bad_changes_and_writes_nothing(store: Store) -> None:
    server, job = await building(store)
    job = await store.start_job(job.id)
    with pytest.raises(ValueError):
        await store.advance(job, "injected", {"no_such_field": 1}, TaskState.SPAWNING)
    assert store.get_job(job.id) == job
    assert store.get_server(server.id).progress == 0


async def test_the_final_advance_ends_the_job_with_its_status_change(store: Store) -> None:
    server, job = await building(store)
    job = await store.start_job(job.id)
    before = store.revision()
    done = await store.advance(job, "running", {
        "vm_state": VmState.ACTIVE, "task_state": None, "power_state": PowerState.RUNNING,
        "progress": 100}, TaskState.SPAWNING, cause="build finished", end=True)
    assert store.revision() == before + 1
    assert (done.status, done.step, done.payload, done.error) == (
        JobStatus.SUCCEEDED, "running", {}, "")
    assert store.unfinished_jobs() == []
    assert store.get_server(server.id).status is Status.ACTIVE
    assert events(store, server.id)[-1] == ("BUILD", "ACTIVE", "build finished")


async def test_end_job_applies_the_server_change_only_under_the_jobs_task(
        store: Store) -> None:
    server, job = await building(store)
    failed = await store.end_job(job.id, JobStatus.FAILED, error="boom", server_changes={
        "vm_state": VmState.ERROR, "task_state": None}, expect_task_state=TaskState.SPAWNING,
        cause="create failed")
    assert (failed.status, failed.error, failed.payload) == (JobStatus.FAILED, "boom", {})
    assert store.get_server(server.id).status is Status.ERROR
    assert events(store, server.id)[-1] == ("BUILD", "ERROR", "create failed")

    other, job2 = await building(store)
    await store.update_server(other.id, {"task_state": TaskState.DELETING}, cause="delete")
    ended = await store.end_job(job2.id, JobStatus.FAILED, error="x", server_changes={
        "vm_state": VmState.ERROR, "task_state": None}, expect_task_state=TaskState.SPAWNING)
    assert ended.status is JobStatus.FAILED  # the job ends; the server is the delete's now
    assert store.get_server(other.id).task_state is TaskState.DELETING


async def test_end_job_without_changes_ends_only_the_job(store: Store) -> None:
    server, job = await building(store)
    before = store.get_server(server.id)
    got = await store.end_job(job.id, JobStatus.CANCELLED, error="interrupted")
    assert (got.status, got.error) == (JobStatus.CANCELLED, "interrupted")
    assert store.get_server(server.id) == before


async def test_pause_job_gives_the_try_back_never_below_zero(store: Store) -> None:
    _, job = await building(store)
    job = await store.start_job(job.id)
    paused = await store.pause_job(job.id)
    assert (paused.status, paused.attempts) == (JobStatus.RUNNING, 0)
    assert (await store.pause_job(job.id)).attempts == 0
    assert await store.pause_job(uuid.uuid4()) is None


async def test_jobs_of_lists_a_servers_jobs_ended_ones_too_oldest_first(store: Store) -> None:
    server, create = await building(store)
    other, _ = await building(store)
    delete = make_job(server.id, kind=JobKind.DELETE, created_at=T0 + timedelta(seconds=1),
                      updated_at=T0 + timedelta(seconds=1))
    await store.add_job(delete)
    await store.end_job(create.id, JobStatus.SUCCEEDED)
    assert [j.id for j in store.jobs_of(server.id)] == [create.id, delete.id]
    assert store.jobs_of(server.id)[0].status is JobStatus.SUCCEEDED
    assert store.jobs_of(uuid.uuid4()) == []
    assert len(store.jobs_of(other.id)) == 1
