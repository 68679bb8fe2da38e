"""Rescue and unrescue.

Rescue: the guest is shut down, a fresh overlay of the rescue image (the server's own
image unless another was asked for) gets the rescue admin password, and the domain is
defined again with that overlay as its first disk (vda, what the rescue image boots from)
and the server's own disk as the second (vdb), then started. Unrescue pulls the plug,
puts the server's own domain back, starts it and removes the rescue overlay.
"""

from __future__ import annotations

from agent.core.injection import InjectionBatcher
from agent.core.workflows.base import WorkflowDeps
from agent.core.workflows.create import base_path
from agent.core.workflows.guest_ops import ActionWorkflow, GuestOps, rescue_disk
from agent.model.domain import DiskSpec, PowerState
from agent.model.injection import LOCKED_HASH, InjectionRequest
from agent.model.job import Job
from agent.model.server import Server
from agent.model.states import TaskState, VmState

STEPS = ("off", "disk", "done")


def step_index(job: Job, steps: tuple[str, ...]) -> int:
    """How many of `steps` the job has checkpointed (0 when none)."""
    return steps.index(job.step) + 1 if job.step in steps else 0


class RescueWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.RESCUING})
    done_states = frozenset({VmState.RESCUED})

    def __init__(self, deps: WorkflowDeps, ops: GuestOps, injector: InjectionBatcher) -> None:
        super().__init__(deps, ops)
        self.injector = injector

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.RESCUING)
        image = d.images.get(job.payload.get("rescue_image_id") or str(server.image_id))
        flavor = d.flavors.get(server.flavor_id)
        own_image = d.images.get(str(server.image_id))
        done = step_index(job, STEPS)
        if done < 1:
            await self.ops.power_off(server.id)
            job = await d.checkpoint(job, "off", {"power_state": PowerState.SHUTDOWN})
        d.ensure_not_taken_over(job, TaskState.RESCUING)
        disk = rescue_disk(d, server.id)
        if done < 2:  # made again from its base if a restart came mid-way
            base = base_path(d, image)
            await d.blocking(d.disks.cache_base, image.disk_file, base)
            disk.unlink(missing_ok=True)
            await d.blocking(d.disks.create_overlay, base, image.disk_format, disk, flavor.disk)
            await self.injector.inject(InjectionRequest(
                disk=disk, root_password_hash=job.payload.get("admin_pass_hash") or LOCKED_HASH))
            job = await d.checkpoint(job, "disk")
        d.ensure_not_taken_over(job, TaskState.RESCUING)
        own = d.files(server.id).disk
        await self.ops.define(server, image=image, disks=(
            DiskSpec(path=disk, format="qcow2", target="vda",
                     bus=image.properties.get("hw_disk_bus", "virtio")),
            DiskSpec(path=own, format="qcow2", target="vdb",
                     bus=own_image.properties.get("hw_disk_bus", "virtio"))))
        await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, TaskState.RESCUING)
        await self.done(job, VmState.RESCUED, "rescued", power_state=PowerState.RUNNING)

    async def cleanup_after_failure(self, job: Job, server: Server) -> None:
        """The server's own domain back (off), the rescue overlay gone."""
        await self.ops.restore_normal_domain(server)


class UnrescueWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.UNRESCUING})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.UNRESCUING)
        await self.ops.restore_normal_domain(server)  # Nova pulls the plug here too
        await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, TaskState.UNRESCUING)
        await self.done(job, VmState.ACTIVE, "unrescued", power_state=PowerState.RUNNING)
