"""Rescue and unrescue.

Rescue: the guest is shut down, a fresh overlay of the rescue image (the server's own
image unless another was asked for) gets the rescue admin password, and the domain is
defined again with that overlay as its first disk (vda, what the rescue image boots from)
and the server's own disk as the second (vdb), then started. Unrescue pulls the plug,
puts the server's own domain back, starts it and removes the rescue overlay.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.core.injection import InjectionBatcher
from agent.core.workflows.base import Outcome, Run, Step, WorkflowDeps
from agent.core.workflows.create import fresh_overlay
from agent.core.workflows.guest_ops import ActionWorkflow, GuestOps, rescue_disk
from agent.model.domain import DiskSpec, PowerState
from agent.model.image import Image
from agent.model.injection import LOCKED_HASH, InjectionRequest
from agent.model.job import Job
from agent.model.server import Server
from agent.model.states import VmState


class RescueWorkflow(ActionWorkflow):
    def __init__(self, deps: WorkflowDeps, ops: GuestOps, injector: InjectionBatcher) -> None:
        super().__init__(deps, ops)
        self.injector = injector

    def steps(self) -> Mapping[str, Step]:
        return {"off": self._off, "disk": self._disk, "done": self.run}

    async def _off(self, run: Run) -> Outcome:
        await self.ops.power_off(run.server.id)
        return Outcome({"power_state": PowerState.SHUTDOWN})

    def _image(self, run: Run) -> Image:
        return self.deps.images.get(run.job.payload.get("rescue_image_id")
                                    or str(run.server.image_id))

    async def _disk(self, run: Run) -> None:
        """The rescue overlay, made again from its base if a restart came mid-way."""
        d = self.deps
        disk = rescue_disk(d, run.server.id)
        await fresh_overlay(d, self._image(run), disk, d.flavors.get(run.server.flavor_id).disk)
        await self.injector.inject(InjectionRequest(
            disk=disk, root_password_hash=run.job.payload.get("admin_pass_hash") or LOCKED_HASH))

    async def run(self, run: Run) -> Outcome:
        d, server, image = self.deps, run.server, self._image(run)
        own_image = d.images.get(str(server.image_id))
        await self.ops.define(server, image=image, disks=(
            DiskSpec(path=rescue_disk(d, server.id), format="qcow2", target="vda",
                     bus=image.properties.get("hw_disk_bus", "virtio")),
            DiskSpec(path=d.files(server.id).disk, format="qcow2", target="vdb",
                     bus=own_image.properties.get("hw_disk_bus", "virtio"))))
        await self.ops.boot(server.id)
        return self.finished(VmState.RESCUED, "rescued", power_state=PowerState.RUNNING)

    async def cleanup_after_failure(self, job: Job, server: Server) -> None:
        """The server's own domain back (off), the rescue overlay gone."""
        await self.ops.restore_normal_domain(server)


class UnrescueWorkflow(ActionWorkflow):
    async def run(self, run: Run) -> Outcome:
        await self.ops.restore_normal_domain(run.server)  # Nova pulls the plug here too
        await self.ops.boot(run.server.id)
        return self.finished(VmState.ACTIVE, "unrescued", power_state=PowerState.RUNNING)
