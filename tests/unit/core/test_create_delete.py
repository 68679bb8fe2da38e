"""Create and delete through the job runner, with fakes in place of libvirt and qemu-img."""

from __future__ import annotations

import asyncio
import re

import pytest

from agent.core.jobs import MAX_ATTEMPTS, JobRunner
from agent.core.workflows import base
from agent.core.workflows.create import CreateWorkflow
from agent.core.workflows.delete import DeleteWorkflow
from agent.errors import HypervisorError, HypervisorUnavailable, ServerNotFound
from agent.model.domain import PowerState
from agent.model.job import JobKind, JobStatus
from agent.model.requests import ServerQuery
from agent.model.states import Status, TaskState
from agent.model.workflows import WORKFLOWS
from tests.unit.core.conftest import ALICE, BOB


async def test_create_commits_server_and_job_before_any_work(world):
    server, password = await world.create()
    stored = world.store.get_server(server.id)
    assert stored.status is Status.BUILD and stored.progress == 0
    [job] = world.store.unfinished_jobs()
    assert job.server_id == server.id
    assert "admin_pass_hash" in job.payload and password not in str(job.payload)
    assert re.fullmatch(r"\$6\$.{16}\$.{86}", job.payload["admin_pass_hash"])
    await world.runner.idle()


async def test_create_runs_every_step_to_active_with_progress(world):
    server, _ = await world.create()
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ACTIVE and s.progress == 100
    assert s.power_state is PowerState.RUNNING and s.launched_at is not None
    assert world.checkpoints == ["create:injected", "create:domain", "create:started",
                                 "create:running"]
    assert world.hypervisor.states[server.id] is PowerState.RUNNING
    spec = world.hypervisor.domains[server.id]
    assert spec.virt_type.value == "qemu" and spec.memory_mib == 256
    assert world.deps.files(server.id).disk.exists()
    assert world.store.unfinished_jobs() == []


async def test_progress_events_are_status_changes_only(world):
    await world.create()
    await world.runner.idle()
    events = [(e.old_status, e.new_status) for e in world.store.events_since(0)]
    assert events == [(None, "BUILD"), ("BUILD", "ACTIVE")]


async def test_failure_tears_the_guest_down_and_leaves_error_with_fault(world):
    world.hypervisor.fail_on["start"] = HypervisorError("start 123: no space left for guest")
    server, _ = await world.create()
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ERROR and s.task_state is None
    assert "no space left" in s.fault.message and s.fault.code == 500
    assert server.id not in world.hypervisor.domains
    assert not world.deps.files(server.id).dir.exists()


async def test_unexpected_exception_becomes_a_fault_without_its_text(world):
    world.hypervisor.fail_on["define"] = RuntimeError("secret internals")
    server, _ = await world.create()
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.fault.message == "internal error (RuntimeError)"


async def test_rejected_password_builds_the_guest_but_ends_in_error(world):
    server, password = await world.create(admin_pass="short")
    assert password == "short"
    [job] = world.store.unfinished_jobs()
    assert "admin_pass_hash" not in job.payload
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ERROR
    assert "password policy" in s.fault.message and "short" not in s.fault.message
    assert world.hypervisor.states[server.id] is PowerState.RUNNING


async def test_delete_removes_domain_and_files_and_keeps_a_deleted_row(world):
    server, _ = await world.create()
    await world.runner.idle()
    await world.service.delete(ALICE, server.id)
    assert world.store.get_server(server.id).task_state is TaskState.DELETING
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.DELETED and s.deleted_at is not None
    assert server.id not in world.hypervisor.domains
    assert not world.deps.files(server.id).dir.exists()
    assert world.store.list_servers(ALICE.project_id) == []


async def test_delete_during_build_interrupts_it_and_leaves_nothing(world):
    server, _ = await world.create()
    await world.service.delete(ALICE, server.id)  # before the runner had a turn
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.DELETED
    assert world.hypervisor.domains == {}
    assert not world.deps.files(server.id).dir.exists()


async def test_resume_after_restart_continues_after_the_last_checkpoint(world):
    world.runner._closing = True  # this daemon dies before running anything itself
    server, _ = await world.create()
    [job] = world.store.unfinished_jobs()
    # A daemon that died right after the "domain" checkpoint left this behind:
    await world.store.update_job(job.id, {"status": JobStatus.RUNNING, "step": "domain", "attempts": 1})
    world.deps.files(server.id).dir.mkdir(parents=True)
    world.deps.files(server.id).disk.write_text("overlay")
    runner = JobRunner(world.deps, {JobKind.CREATE: CreateWorkflow(world.deps, world.batcher),
                                    JobKind.DELETE: DeleteWorkflow(world.deps)})
    # The domain is defined again (idempotent), so even one lost behind our back is back.
    assert runner.resume_all() == 1
    await runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ACTIVE
    assert world.checkpoints == ["create:started", "create:running"]


async def test_a_job_that_keeps_killing_the_daemon_is_abandoned(world):
    world.service.kick = lambda _id: None  # the job runs only when resumed, as after a restart
    server, _ = await world.create()
    [job] = world.store.unfinished_jobs()
    await world.store.update_job(job.id, {"status": JobStatus.RUNNING, "attempts": MAX_ATTEMPTS})
    await world.runner.idle()
    world.runner.resume_all()
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ERROR and "abandoned" in s.fault.message
    assert world.store.unfinished_jobs() == []


class Died(BaseException):
    """Stands for the daemon's death (kill -9) inside a step: nothing after it runs."""


def restarted(world) -> JobRunner:
    """A new daemon's runner over the same store, as after a kill -9."""
    return JobRunner(world.deps, dict(world.runner.workflows), retry_backoff_s=0.001)


async def die_where(world, runner: JobRunner, step: str | None) -> None:
    """Run the job until it reaches the end of `step`'s work (None: the first step), and
    die there: the job stays 'running' with the try counted, as a SIGKILL leaves it."""
    def crash(job, done):
        if step is None or done == step:
            raise Died
    world.deps.before_checkpoint = crash
    runner.resume_all()
    with pytest.raises(Died):
        await asyncio.gather(*runner._active.values())
    world.deps.before_checkpoint = lambda job, done: None


async def test_deaths_at_steps_that_advance_never_abandon_a_build(world):
    """A restart is not a failed attempt: the daemon killed at each step of a build in
    turn, twice at each (more deaths than MAX_ATTEMPTS in all), and the build still ends
    ACTIVE, because a step done starts the count again."""
    world.runner._closing = True
    server, _ = await world.create()
    steps = list(WORKFLOWS[JobKind.CREATE].steps)
    for step in steps:
        for _ in range(2):
            await die_where(world, restarted(world), step)
    [job] = world.store.unfinished_jobs()
    assert job.step == "started" and job.attempts == 2  # deaths at 'running' only
    assert 2 * len(steps) > MAX_ATTEMPTS
    runner = restarted(world)
    runner.resume_all()
    await runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ACTIVE, s.fault


async def test_a_step_that_always_kills_the_daemon_ends_in_error(world):
    """The poison-job guard still holds: a step whose work kills the daemon every time is
    abandoned after MAX_ATTEMPTS deaths there, the server in ERROR naming the step."""
    world.runner._closing = True
    server, _ = await world.create()
    for _ in range(MAX_ATTEMPTS):  # dies in the disk step's work, before it is recorded
        await die_where(world, restarted(world), "injected")
    [job] = world.store.unfinished_jobs()
    assert job.attempts == MAX_ATTEMPTS
    runner = restarted(world)
    runner.resume_all()
    await runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ERROR
    assert f"abandoned after {MAX_ATTEMPTS} attempts at step 'start'" in s.fault.message
    assert world.store.unfinished_jobs() == []


async def test_a_retry_after_a_death_waits_before_its_try_counts(world):
    """After a death the next try waits (backing off, doubling), and a restart during that
    wait does not count: the job's try count is unchanged until the wait is over."""
    world.runner._closing = True
    await world.create()
    await die_where(world, restarted(world), None)
    [job] = world.store.unfinished_jobs()
    assert job.attempts == 1
    slow = JobRunner(world.deps, dict(world.runner.workflows), retry_backoff_s=60.0)
    slow.resume_all()
    for _ in range(20):
        await asyncio.sleep(0)
    await slow.stop()  # a restart while it waits
    [waited] = world.store.unfinished_jobs()
    assert waited.attempts == 1 and not waited.step


async def test_a_clean_stop_does_not_count_as_an_attempt(world):
    """A job paused by a clean stop (SIGTERM) keeps its attempts: only a death under the
    job counts toward abandoning it, so restarts during a long build never fail it."""
    await world.create()
    for _ in range(100):  # until the job runs and waits for its injection batch
        await asyncio.sleep(0)
        if world.store.unfinished_jobs()[0].attempts == 1:
            break
    await world.runner.stop()
    [paused] = world.store.unfinished_jobs()
    assert (paused.status, paused.attempts) == (JobStatus.RUNNING, 0)


async def test_a_libvirtd_away_at_start_is_waited_for_and_the_build_finishes(world):
    """libvirtd restarting right after the domain was defined (its connection lost): the
    start is asked again once it is back, and the server ends ACTIVE, started once."""
    world.hypervisor.fail_on["start"] = HypervisorUnavailable("start: End of file")
    server, _ = await world.create()

    async def libvirtd_comes_back() -> None:
        while "create:domain" not in world.checkpoints:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        del world.hypervisor.fail_on["start"]

    await asyncio.gather(libvirtd_comes_back(), world.runner.idle())
    s = world.store.get_server(server.id)
    assert s.status is Status.ACTIVE, s.fault
    assert world.checkpoints.count("create:started") == 1


async def test_a_libvirtd_that_stays_away_fails_the_build_with_a_fault(world, monkeypatch):
    monkeypatch.setattr(base, "LIBVIRT_PATIENCE_S", 0.0)
    world.hypervisor.fail_on["start"] = HypervisorUnavailable("start: End of file")
    server, _ = await world.create()
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ERROR and "End of file" in s.fault.message
    assert server.id not in world.hypervisor.domains


async def test_other_projects_cannot_see_or_delete(world):
    server, _ = await world.create()
    with pytest.raises(ServerNotFound):
        world.service.get(BOB, server.id)
    with pytest.raises(ServerNotFound):
        await world.service.delete(BOB, server.id)
    assert world.service.list(BOB, ServerQuery()) == ([], False)
    await world.runner.idle()
    assert world.store.get_server(server.id).status is Status.ACTIVE


async def test_concurrent_creates_never_exceed_the_quota_together(world):
    """The quota is read, then the servers are written by an awaited commit: two creates
    for the last free slot take turns, so one gets it and the other QuotaExceeded."""
    world.service.kick = lambda _id: None
    await world.create()
    await world.create()  # 2 of 3
    results = await asyncio.gather(world.create(), world.create(), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["QuotaExceeded", "tuple"]
    assert len(world.store.list_servers()) == 3
