"""Power actions: reboot (soft, hard), stop, start, suspend, resume.

Each runs under its own task_state, so the monitor leaves the server alone meanwhile (a
reboot never shows a false SHUTOFF), and is one step that ends with the final state. They
are safe to run again after a restart: each looks at the guest first.
"""

from __future__ import annotations

import contextlib

import structlog

from agent.core.workflows.base import Outcome, Run
from agent.core.workflows.guest_ops import ActionWorkflow, rescue_disk
from agent.errors import DomainNotFound
from agent.model.domain import PowerState
from agent.model.states import VmState

log = structlog.get_logger("agent.actions")


class RebootWorkflow(ActionWorkflow):
    """SOFT: the ACPI power button, then a fresh start once the guest is off (as Nova's
    libvirt driver does); a guest that is not off within soft_reboot_s gets a hard reboot.
    HARD: the plug pulled, the domain defined again from the server (which repairs a
    broken definition, so it also recovers a server in ERROR), started."""

    async def run(self, run: Run) -> Outcome:
        server = run.server
        clean = False
        if not run.job.payload.get("hard"):
            clean = await self.ops.clean_shutdown(server.id, self.timings.soft_reboot_s)
            if not clean:
                log.warning("reboot.soft_timeout", server_id=str(server.id),
                            timeout_s=self.timings.soft_reboot_s, fallback="hard")
        if not clean:
            await self.ops.restore_normal_domain(server)
        await self.ops.boot(server.id)
        return self.finished(VmState.ACTIVE, "rebooted" if clean else "hard rebooted",
                             power_state=PowerState.RUNNING)


class StopWorkflow(ActionWorkflow):
    """A clean shutdown within clean_shutdown_s, else the plug pulled. Stopping a server
    in rescue puts its own domain back (it starts on its own disk)."""

    async def run(self, run: Run) -> Outcome:
        d, server = self.deps, run.server
        await self.ops.power_off(server.id)
        if server.vm_state is VmState.RESCUED or await d.blocking(
                d.disks.exists, rescue_disk(d, server.id)):
            await self.ops.restore_normal_domain(server)
        return self.finished(VmState.STOPPED, "stopped", power_state=PowerState.SHUTDOWN)


class StartWorkflow(ActionWorkflow):
    async def run(self, run: Run) -> Outcome:
        await self.ops.boot(run.server.id)
        return self.finished(VmState.ACTIVE, "started", power_state=PowerState.RUNNING)


class SuspendWorkflow(ActionWorkflow):
    """libvirt managed save: the guest's memory goes to disk and its vCPUs are freed."""

    async def run(self, run: Run) -> Outcome:
        d, server = self.deps, run.server
        saved = await d.blocking(d.hypervisor.has_managed_save, server.id)
        if not saved or await self.ops.power(server.id) is PowerState.RUNNING:
            await d.blocking(d.hypervisor.managed_save, server.id)
        return self.finished(VmState.SUSPENDED, "suspended", power_state=PowerState.SHUTDOWN)


class ResumeWorkflow(ActionWorkflow):
    """Start from the managed save image: the guest goes on where it was, memory intact.
    Without one (removed behind the agent's back) the guest boots afresh, and says so."""

    async def run(self, run: Run) -> Outcome:
        d, server = self.deps, run.server
        with contextlib.suppress(DomainNotFound):
            if (await self.ops.power(server.id) is not PowerState.RUNNING
                    and not await d.blocking(d.hypervisor.has_managed_save, server.id)):
                log.warning("resume.no_managed_save", server_id=str(server.id),
                            effect="the guest boots afresh; its memory is lost")
        await self.ops.boot(server.id)
        return self.finished(VmState.ACTIVE, "resumed", power_state=PowerState.RUNNING)
