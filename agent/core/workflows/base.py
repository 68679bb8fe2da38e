"""What every workflow shares: the ports it acts through, and the shape of a step."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from agent.core.flavors import FlavorCatalog
from agent.core.guest_layout import InstanceFiles
from agent.core.netplumbing import NetworkPlumbing
from agent.errors import DomainNotFound, HypervisorUnavailable
from agent.model.host import VirtType
from agent.model.job import Job
from agent.model.server import Fault, Server
from agent.model.states import TaskState, VmState
from agent.protocols import Disks, Hypervisor, ImageCatalog, Store

# How long a build waits for a libvirtd that went away (a restart takes a few seconds).
LIBVIRT_PATIENCE_S = 60.0

# Called after each step is recorded; tests use it to kill the daemon there.
CheckpointHook = Callable[[Job, str], None]


@dataclass(frozen=True)
class Outcome:
    """What a step did to the server, recorded with the step (one Store.advance)."""

    changes: dict[str, Any] = field(default_factory=dict)
    cause: str = ""
    # The job is done here: recorded as its final step, the steps left skipped (a
    # changePassword the guest agent did online needs no shutdown).
    finish: bool = False


@dataclass
class Run:
    """One run of a job: the job as last recorded, its server as it was when the run
    began, the task it runs under and the steps this run has done."""

    job: Job
    server: Server
    task: TaskState | None
    done: list[str] = field(default_factory=list)


Step = Callable[[Run], Awaitable[Outcome | None]]


class StepWorkflow:
    """A workflow as the job runner runs it: a function per declared step (model/workflows)."""

    def __init__(self, deps: WorkflowDeps) -> None:
        self.deps = deps

    def steps(self) -> Mapping[str, Step]:
        raise NotImplementedError

    async def settle_failure(self, job: Job, server: Server, message: str) -> dict[str, Any]:
        """The server's changes after a failed run: ERROR, with a fault."""
        return {"vm_state": VmState.ERROR, "task_state": None,
                "fault": self.deps.fault(500, message)}


@dataclass
class WorkflowDeps:
    store: Store
    hypervisor: Hypervisor
    disks: Disks
    images: ImageCatalog
    flavors: FlavorCatalog
    instances_dir: Path
    base_dir: Path
    virt_type: VirtType
    # Bridges, taps and DHCP for the servers' ports (a host without networks plugs none).
    network: NetworkPlumbing
    on_checkpoint: CheckpointHook = field(default=lambda job, step: None)
    # Called before a step is recorded (its work is done, not yet recorded); tests use it
    # to kill the daemon in a step that then never advances.
    before_checkpoint: CheckpointHook = field(default=lambda job, step: None)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def fault(self, code: int, message: str) -> Fault:
        return Fault(code=code, message=message, created=self.now())

    def files(self, server_id: UUID) -> InstanceFiles:
        return InstanceFiles(self.instances_dir, server_id)

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Adapters block (libvirt, qemu-img, guestfs): run them off the event loop."""
        return await asyncio.to_thread(fn, *args)

    async def patiently(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`blocking`, but a libvirtd that is away (killed, restarting) is waited for, up
        to LIBVIRT_PATIENCE_S, and the call made again. Only for calls that are safe to
        repeat: one cut off mid-way may or may not have been done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIBVIRT_PATIENCE_S
        while True:
            try:
                return await self.blocking(fn, *args)
            except HypervisorUnavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(1.0)

    def current(self, job: Job) -> Server:
        server = self.store.get_server(job.server_id)
        assert server is not None, f"job {job.id} for a server that does not exist"
        return server

    async def tear_down_guest(self, server_id: UUID) -> None:
        """Destroy and undefine the domain, remove the guest's files, unplug its taps and
        release its ports (the user's are detached and kept). Idempotent."""
        with contextlib.suppress(DomainNotFound):
            await self.blocking(self.hypervisor.destroy, server_id)
        await self.blocking(self.hypervisor.undefine, server_id)
        await self.blocking(self.disks.remove_tree, self.files(server_id).dir)
        await self.network.release_server(server_id)  # taps, leases, the agent's ports
