"""What every workflow shares: the ports it acts through and how it checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
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
from agent.model.states import TaskState
from agent.ports import Disks, Hypervisor, ImageCatalog, Store

# How long a build waits for a libvirtd that went away (a restart takes a few seconds).
LIBVIRT_PATIENCE_S = 60.0

# Called after each checkpoint is committed; tests use it to kill the daemon there.
CheckpointHook = Callable[[Job, str], None]


class Interrupted(Exception):
    """A later job (a delete) took the server over: stop without touching it further."""


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
    on_checkpoint: CheckpointHook = field(default=lambda job, step: None)
    # Called before a checkpoint is committed (the step's work is done, not yet recorded);
    # tests use it to kill the daemon in a step that then never advances.
    before_checkpoint: CheckpointHook = field(default=lambda job, step: None)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Bridges, taps and DHCP for the servers' ports (None: no networking on this host).
    network: NetworkPlumbing | None = None

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

    async def checkpoint(self, job: Job, step: str, server_changes: dict[str, Any] | None = None,
                   cause: str = "") -> Job:
        self.before_checkpoint(job, step)
        if server_changes:
            await self.store.update_server(job.server_id, server_changes, cause=cause or step)
        # A step done starts the try count again: this run is the first try at the next
        # step, so only deaths at one step that never advances fail the job (jobs.py).
        changes: dict[str, Any] = {"step": step}
        if step != job.step:
            changes["attempts"] = 1
        job = await self.store.update_job(job.id, changes)
        self.on_checkpoint(job, step)
        return job

    def current(self, job: Job) -> Server:
        server = self.store.get_server(job.server_id)
        assert server is not None, f"job {job.id} for a server that does not exist"
        return server

    def ensure_not_taken_over(self, job: Job, own_task: TaskState | None) -> Server:
        server = self.current(job)
        if server.task_state is not own_task:
            raise Interrupted(f"server now {server.task_state}")
        return server

    async def tear_down_guest(self, server_id: UUID) -> None:
        """Destroy and undefine the domain, remove the guest's files, unplug its taps and
        release its ports (the user's are detached and kept). Idempotent."""
        with contextlib.suppress(DomainNotFound):
            await self.blocking(self.hypervisor.destroy, server_id)
        await self.blocking(self.hypervisor.undefine, server_id)
        await self.blocking(self.disks.remove_tree, self.files(server_id).dir)
        if self.network is not None:  # taps, leases, and the ports the agent made for it
            await self.network.release_server(server_id)
