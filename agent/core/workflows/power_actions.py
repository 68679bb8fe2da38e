"""Power actions: reboot (soft, hard), stop, start, suspend, resume.

Each runs under its own task_state, so the monitor leaves the server alone meanwhile (a
reboot never shows a false SHUTOFF) and ends with one checkpoint that sets the final
state. They are safe to run again after a restart: each step looks at the guest first.
"""

from __future__ import annotations

import contextlib

import structlog

from agent.core.workflows.guest_ops import ActionWorkflow, rescue_disk
from agent.errors import DomainNotFound
from agent.model.domain import PowerState
from agent.model.job import Job
from agent.model.states import TaskState, VmState

log = structlog.get_logger("agent.actions")


class RebootWorkflow(ActionWorkflow):
    """SOFT: the ACPI power button, then a fresh start once the guest is off (as Nova's
    libvirt driver does); a guest that is not off within soft_reboot_s gets a hard reboot.
    HARD: the plug pulled, the domain defined again from the server (which repairs a
    broken definition, so it also recovers a server in ERROR), started."""

    kind_tasks = frozenset({TaskState.REBOOTING, TaskState.REBOOTING_HARD})

    async def run(self, job: Job) -> None:
        d = self.deps
        hard = bool(job.payload.get("hard"))
        task = TaskState.REBOOTING_HARD if hard else TaskState.REBOOTING
        server = d.ensure_not_taken_over(job, task)
        clean = False
        if not hard:
            clean = await self.ops.clean_shutdown(server.id, self.timings.soft_reboot_s)
            d.ensure_not_taken_over(job, task)
            if not clean:
                log.warning("reboot.soft_timeout", server_id=str(server.id),
                            timeout_s=self.timings.soft_reboot_s, fallback="hard")
        if not clean:
            await self.ops.restore_normal_domain(server)
        await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, task)
        await self.done(job, VmState.ACTIVE, "rebooted" if clean else "hard rebooted",
                  power_state=PowerState.RUNNING)


class StopWorkflow(ActionWorkflow):
    """A clean shutdown within clean_shutdown_s, else the plug pulled. Stopping a server
    in rescue puts its own domain back (it starts on its own disk)."""

    kind_tasks = frozenset({TaskState.POWERING_OFF})
    done_states = frozenset({VmState.STOPPED})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.POWERING_OFF)
        await self.ops.power_off(server.id)
        if server.vm_state is VmState.RESCUED or rescue_disk(d, server.id).exists():
            await self.ops.restore_normal_domain(server)
        d.ensure_not_taken_over(job, TaskState.POWERING_OFF)
        await self.done(job, VmState.STOPPED, "stopped", power_state=PowerState.SHUTDOWN)


class StartWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.POWERING_ON})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.POWERING_ON)
        await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, TaskState.POWERING_ON)
        await self.done(job, VmState.ACTIVE, "started", power_state=PowerState.RUNNING)


class SuspendWorkflow(ActionWorkflow):
    """libvirt managed save: the guest's memory goes to disk and its vCPUs are freed."""

    kind_tasks = frozenset({TaskState.SUSPENDING})
    done_states = frozenset({VmState.SUSPENDED})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.SUSPENDING)
        saved = await d.blocking(d.hypervisor.has_managed_save, server.id)
        if not saved or await self.ops.power(server.id) is PowerState.RUNNING:
            await d.blocking(d.hypervisor.managed_save, server.id)
        d.ensure_not_taken_over(job, TaskState.SUSPENDING)
        await self.done(job, VmState.SUSPENDED, "suspended", power_state=PowerState.SHUTDOWN)


class ResumeWorkflow(ActionWorkflow):
    """Start from the managed save image: the guest goes on where it was, memory intact.
    Without one (removed behind the agent's back) the guest boots afresh, and says so."""

    kind_tasks = frozenset({TaskState.RESUMING})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.RESUMING)
        with contextlib.suppress(DomainNotFound):
            if (await self.ops.power(server.id) is not PowerState.RUNNING
                    and not await d.blocking(d.hypervisor.has_managed_save, server.id)):
                log.warning("resume.no_managed_save", server_id=str(server.id),
                            effect="the guest boots afresh; its memory is lost")
        await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, TaskState.RESUMING)
        await self.done(job, VmState.ACTIVE, "resumed", power_state=PowerState.RUNNING)
