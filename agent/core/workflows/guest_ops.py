"""Steps the action workflows share: power a guest off (cleanly if it will), boot it and
wait until it runs, (re)define its domain, and the shape of an action workflow.

A clean shutdown presses the ACPI power button and presses it again every few seconds (a
guest still booting has no one listening yet), as Nova's `_clean_shutdown` does; a guest
that is not off in time gets the plug pulled. Waiting is polling libvirt's power state:
the hypervisor is the authority, events only make the monitor look sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import structlog

from agent.core.guest_layout import build_domain_spec
from agent.core.workflows.base import WorkflowDeps
from agent.errors import DomainNotFound, HypervisorError, HypervisorUnavailable
from agent.model.domain import DiskSpec, DomainSpec, PowerState
from agent.model.flavor import Flavor
from agent.model.image import Image
from agent.model.job import Job
from agent.model.server import Server
from agent.model.states import TaskState, VmState

log = structlog.get_logger("agent.actions")

OFF = frozenset({PowerState.SHUTDOWN, PowerState.CRASHED, PowerState.NOSTATE})
ON = frozenset({PowerState.RUNNING, PowerState.PAUSED})
FINAL_STEP = "done"
# States a failed action leaves as they were: the same action may be tried again.
_STICKY = frozenset({VmState.ERROR, VmState.RESCUED, VmState.RESIZED})


@dataclass(frozen=True)
class ActionTimings:
    """How long actions wait for a guest (defaults as Nova's: shutdown_timeout=60,
    wait_soft_reboot_seconds=120)."""

    clean_shutdown_s: float = 60.0
    soft_reboot_s: float = 120.0
    acpi_retry_s: float = 3.0  # a guest still booting misses a press: press again
    running_s: float = 60.0
    poll_s: float = 0.2


def rescue_disk(deps: WorkflowDeps, server_id: UUID) -> Path:
    """The rescue image's overlay, the first disk while the server is in rescue."""
    return deps.files(server_id).dir / "disk.rescue.qcow2"


class GuestOps:
    def __init__(self, deps: WorkflowDeps, timings: ActionTimings) -> None:
        self.deps = deps
        self.timings = timings

    async def power(self, server_id: UUID) -> PowerState:
        return await self.deps.blocking(self.deps.hypervisor.power_state, server_id)

    async def wait_power(self, server_id: UUID, want: frozenset[PowerState], timeout: float) -> bool:
        """Poll until the power state is one of `want`; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self.power(server_id) in want:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(self.timings.poll_s, max(0.0, deadline - loop.time())))

    async def clean_shutdown(self, server_id: UUID, timeout: float) -> bool:
        """Press the power button (again every acpi_retry_s) until the guest is off;
        True if it went off by itself within `timeout`, False if it did not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self.power(server_id) in OFF:
                return True
            with contextlib.suppress(HypervisorError):  # it may have gone off meanwhile
                await self.deps.blocking(self.deps.hypervisor.shutdown, server_id)
            left = deadline - loop.time()
            if left <= 0:
                return False
            if await self.wait_power(server_id, OFF, min(self.timings.acpi_retry_s, left)):
                return True

    async def destroy(self, server_id: UUID) -> None:
        """Pull the plug (an off guest is fine)."""
        await self.deps.blocking(self.deps.hypervisor.destroy, server_id)

    async def power_off(self, server_id: UUID, timeout: float | None = None) -> bool:
        """A clean shutdown, else the plug pulled; True if it was clean."""
        clean = await self.clean_shutdown(server_id, self.timings.clean_shutdown_s
                                          if timeout is None else timeout)
        if not clean:
            log.warning("action.shutdown_timeout", server_id=str(server_id))
            await self.destroy(server_id)
        return clean

    def spec(self, server: Server, *, image: Image | None = None, flavor: Flavor | None = None,
             disks: tuple[DiskSpec, ...] | None = None) -> DomainSpec:
        """The server's domain, as create defines it; another image (kernel), flavor or
        set of disks when given."""
        d = self.deps
        image = image or d.images.get(str(server.image_id))
        flavor = flavor or d.flavors.get(server.flavor_id)
        spec = build_domain_spec(server.id, image, flavor, d.files(server.id), d.virt_type, metadata={
            "server_id": str(server.id), "project_id": server.project_id,
            "flavor_id": flavor.id, "image_id": str(image.uuid)},
            interfaces=d.network.interfaces(server.id) if d.network is not None else ())
        return spec if disks is None else spec.model_copy(update={"disks": disks})

    async def define(self, server: Server, **kw: Any) -> None:
        await self.deps.blocking(self.deps.hypervisor.define, self.spec(server, **kw))

    async def boot(self, server_id: UUID) -> None:
        """Start the guest (taps plugged first: they vanish with a host reboot) unless it
        runs, and wait until libvirt says it runs."""
        d = self.deps
        if d.network is not None:
            await d.network.plug_server(server_id)
        if await self.power(server_id) not in ON:
            await d.blocking(d.hypervisor.start, server_id)
        if not await self.wait_power(server_id, frozenset({PowerState.RUNNING}),
                                     self.timings.running_s):
            state = await self.power(server_id)
            raise TimeoutError(f"guest not running after {self.timings.running_s:.0f} s "
                               f"(power state {state.name})")

    async def discard_state(self, server_id: UUID) -> None:
        """Off, with no managed save image and no rescue overlay left."""
        with contextlib.suppress(DomainNotFound):
            await self.destroy(server_id)
        with contextlib.suppress(DomainNotFound):
            await self.deps.blocking(self.deps.hypervisor.remove_managed_save, server_id)
        rescue_disk(self.deps, server_id).unlink(missing_ok=True)

    async def restore_normal_domain(self, server: Server) -> None:
        """discard_state, and the server's own domain defined again: what a hard reboot,
        unrescue and a failed rescue start from."""
        await self.discard_state(server.id)
        await self.define(server)


class ActionWorkflow:
    """An action's workflow. The job runner reads the class attributes: the task(s) its
    server carries while it runs, its last checkpoint, and the vm_states it may end in."""

    kind_tasks: ClassVar[frozenset[TaskState]]
    done_states: ClassVar[frozenset[VmState]] = frozenset({VmState.ACTIVE})
    final_step: ClassVar[str] = FINAL_STEP

    def __init__(self, deps: WorkflowDeps, ops: GuestOps) -> None:
        self.deps = deps
        self.ops = ops

    @property
    def timings(self) -> ActionTimings:
        return self.ops.timings

    async def run(self, job: Job) -> None:
        raise NotImplementedError

    async def done(self, job: Job, vm_state: VmState, cause: str, **changes: Any) -> Job:
        """The last checkpoint: the final state, no task, no fault."""
        return await self.deps.checkpoint(job, self.final_step, {
            "vm_state": vm_state, "task_state": None, "fault": None, **changes}, cause=cause)

    async def cleanup_after_failure(self, job: Job, server: Server) -> None:
        """Undo what a failed run left half-done (nothing, by default)."""

    async def settle_failure(self, job: Job, server: Server, message: str) -> dict[str, Any]:
        """The server's changes after a failed run: a fault, no task, and a clear status.
        ERROR only when the guest is broken (no domain, crashed); UNKNOWN when libvirt
        cannot be asked (the monitor resyncs it after the reconnect); a server that was
        in ERROR, RESCUE or VERIFY_RESIZE stays there (the action can be tried again);
        else what the guest really does: ACTIVE, SHUTOFF, or SUSPENDED."""
        try:
            await self.cleanup_after_failure(job, server)
        except Exception as e:  # the fault below says what failed first
            log.error("action.cleanup_failed", server_id=str(server.id), error=type(e).__name__)
        changes: dict[str, Any] = {"task_state": None, "fault": self.deps.fault(500, message)}
        try:
            power = await self.ops.power(server.id)
            saved = power in OFF and await self.deps.blocking(
                self.deps.hypervisor.has_managed_save, server.id)
        except HypervisorUnavailable:
            return {**changes, "vm_state": VmState.UNKNOWN}
        except HypervisorError:  # DomainNotFound included: the guest is gone
            return {**changes, "vm_state": VmState.ERROR}
        changes["power_state"] = power
        if power is PowerState.CRASHED:
            changes["vm_state"] = VmState.ERROR
        elif server.vm_state in _STICKY:
            changes["vm_state"] = server.vm_state
        elif power in ON:
            changes["vm_state"] = VmState.ACTIVE
        else:
            changes["vm_state"] = VmState.SUSPENDED if saved else VmState.STOPPED
        return changes
