"""Reboot (soft, hard), stop, start, suspend and resume through the wired core, with the
fake hypervisor: the status while in flight, the calls made, the final state, and what a
failure leaves."""

from __future__ import annotations

import asyncio
import contextlib

from agent.core.monitor import PowerMonitor
from agent.errors import DomainNotFound, HypervisorError, StaleServer
from agent.model.domain import PowerState
from agent.model.job import JobKind, JobStatus
from agent.model.server import Fault
from agent.model.states import Status, TaskState, VmState
from tests.unit.core.actions.conftest import ALICE


def calls_after(aw, server_id, mark: int) -> list[str]:
    return [op for op, u in aw.hypervisor.calls[mark:] if u == server_id]


async def test_soft_reboot_is_a_clean_shutdown_then_a_start(aw):
    sid = await aw.active()
    mark = len(aw.hypervisor.calls)
    committed = await aw.actions.reboot(ALICE, sid, hard=False)
    assert committed.status is Status.REBOOT and committed.task_state is TaskState.REBOOTING
    [job] = aw.store.unfinished_jobs()
    assert job.kind is JobKind.REBOOT and job.payload == {"hard": False}
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.ACTIVE and s.power_state is PowerState.RUNNING
    ops = calls_after(aw, sid, mark)
    assert "shutdown" in ops and "start" in ops and "destroy" not in ops
    assert aw.statuses(sid) == ["BUILD", "ACTIVE", "REBOOT", "ACTIVE"]
    assert aw.store.get_job(job.id).status is JobStatus.SUCCEEDED


async def test_soft_reboot_falls_back_to_hard_when_the_guest_ignores_acpi(aw):
    sid = await aw.active()
    aw.hypervisor.acpi_ignored.add(sid)
    mark = len(aw.hypervisor.calls)
    await aw.actions.reboot(ALICE, sid, hard=False)
    await aw.settle()
    ops = calls_after(aw, sid, mark)
    assert ops.count("shutdown") >= 2  # pressed again while waiting
    assert ops.index("destroy") < ops.index("define") < ops.index("start")
    assert aw.server(sid).status is Status.ACTIVE


async def test_hard_reboot_redefines_and_recovers_a_server_in_error(aw):
    sid = await aw.active()
    aw.hypervisor.states[sid] = PowerState.CRASHED
    await aw.set_state(sid, VmState.ERROR, fault=Fault(code=500, message="boom", created=aw.deps.now()))
    mark = len(aw.hypervisor.calls)
    committed = await aw.actions.reboot(ALICE, sid, hard=True)
    assert committed.task_state is TaskState.REBOOTING_HARD
    assert committed.status is Status.ERROR  # as Nova shows an ERROR server's reboot
    await aw.settle()
    assert calls_after(aw, sid, mark) == ["destroy", "define", "start"]
    s = aw.server(sid)
    assert s.status is Status.ACTIVE and s.fault is None


async def test_hard_reboot_of_an_active_server_shows_hard_reboot(aw):
    sid = await aw.active()
    assert (await aw.actions.reboot(ALICE, sid, hard=True)).status is Status.HARD_REBOOT
    await aw.settle()
    assert aw.statuses(sid)[-2:] == ["HARD_REBOOT", "ACTIVE"]


async def test_ten_reboots_show_no_shutoff_even_with_the_monitor_looking(aw):
    sid = await aw.active()
    monitor = PowerMonitor(aw.store, aw.hypervisor, kick=aw.runner.kick)
    for i in range(10):
        await aw.actions.reboot(ALICE, sid, hard=bool(i % 2))
        for _ in range(5):  # the guest is off for a moment: the monitor sees it
            with contextlib.suppress(StaleServer):  # (the monitor's loop looks again then)
                await monitor.reconcile(sid)
            await asyncio.sleep(0)
        await aw.settle()
        await monitor.reconcile(sid)
    events = aw.statuses(sid)
    assert "SHUTOFF" not in events
    assert events.count("REBOOT") == 5 and events.count("HARD_REBOOT") == 5


async def test_the_monitor_records_power_but_not_status_during_a_reboot(aw):
    sid = await aw.active()
    monitor = PowerMonitor(aw.store, aw.hypervisor, kick=aw.runner.kick)
    aw.hypervisor.acpi_ignored.add(sid)  # the workflow keeps waiting for the guest to go off
    await aw.actions.reboot(ALICE, sid, hard=False)
    await asyncio.sleep(0.05)
    aw.hypervisor.states[sid] = PowerState.SHUTDOWN  # off, and not started again yet
    await monitor.reconcile(sid)
    s = aw.server(sid)
    assert s.status is Status.REBOOT and s.power_state is PowerState.SHUTDOWN
    await aw.settle()
    assert aw.server(sid).status is Status.ACTIVE
    assert "SHUTOFF" not in aw.statuses(sid)


async def test_stop_then_start(aw):
    sid = await aw.active()
    await aw.actions.simple(ALICE, sid, "os-stop")
    assert aw.server(sid).task_state is TaskState.POWERING_OFF
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.SHUTOFF and s.power_state is PowerState.SHUTDOWN
    assert aw.hypervisor.states[sid] is PowerState.SHUTDOWN
    await aw.actions.simple(ALICE, sid, "os-start")
    assert aw.server(sid).task_state is TaskState.POWERING_ON
    await aw.settle()
    assert aw.server(sid).status is Status.ACTIVE
    assert aw.hypervisor.states[sid] is PowerState.RUNNING


async def test_stop_pulls_the_plug_after_the_timeout(aw):
    sid = await aw.active()
    aw.hypervisor.acpi_ignored.add(sid)
    mark = len(aw.hypervisor.calls)
    await aw.actions.simple(ALICE, sid, "os-stop")
    await aw.settle()
    assert "destroy" in calls_after(aw, sid, mark)
    assert aw.server(sid).status is Status.SHUTOFF


async def test_suspend_saves_memory_and_resume_restores_it(aw):
    sid = await aw.active()
    await aw.actions.simple(ALICE, sid, "suspend")
    await aw.settle()
    assert aw.server(sid).status is Status.SUSPENDED
    assert sid in aw.hypervisor.saved
    await aw.actions.simple(ALICE, sid, "resume")
    await aw.settle()
    assert aw.server(sid).status is Status.ACTIVE
    assert aw.hypervisor.restored == [sid] and sid not in aw.hypervisor.saved


async def test_the_monitor_leaves_a_suspended_server_alone(aw):
    sid = await aw.active()
    await aw.actions.simple(ALICE, sid, "suspend")
    await aw.settle()
    await PowerMonitor(aw.store, aw.hypervisor, kick=aw.runner.kick).reconcile(sid)
    assert aw.server(sid).status is Status.SUSPENDED


async def test_a_failed_action_leaves_a_fault_and_the_real_status(aw):
    sid = await aw.active()
    aw.hypervisor.fail_on["managed_save"] = HypervisorError("managed save: disk full")
    await aw.actions.simple(ALICE, sid, "suspend")
    [job] = aw.store.unfinished_jobs()
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.ACTIVE and s.task_state is None  # the guest still runs
    assert "disk full" in s.fault.message
    done = aw.store.get_job(job.id)
    assert done.status is JobStatus.FAILED and "disk full" in done.error


async def test_a_reboot_that_cannot_start_the_guest_leaves_it_shutoff_with_a_fault(aw):
    sid = await aw.active()
    aw.hypervisor.fail_on["start"] = HypervisorError("start: no memory for the guest")
    await aw.actions.reboot(ALICE, sid, hard=False)
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.SHUTOFF and "no memory" in s.fault.message


async def test_an_action_on_a_vanished_domain_ends_in_error(aw):
    sid = await aw.active()
    aw.hypervisor.fail_on["power_state"] = DomainNotFound("gone")
    await aw.actions.simple(ALICE, sid, "os-stop")
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.ERROR and s.fault is not None


async def test_a_delete_during_an_action_takes_over(aw):
    sid = await aw.active()
    aw.hypervisor.acpi_ignored.add(sid)
    await aw.actions.reboot(ALICE, sid, hard=False)
    await asyncio.sleep(0.02)
    await aw.service.delete(ALICE, sid)
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.DELETED and sid not in aw.hypervisor.domains
