"""Rebuild and changePassword: both shut the guest down and write into its disk with
libguestfs (through the InjectionBatcher, so they share appliance launches with builds).

Rebuild: the plug is pulled (the old disk is thrown away, so there is nothing to shut
down cleanly for); a fresh overlay of the (new or same) image, with the new personality
files and admin password, replaces the server's disk; the domain is defined again from
that image (its kernel may differ) and started -> ACTIVE. A server in ERROR whose domain
is gone gets a new one.

changePassword, online: when the server's image declares a QEMU guest agent
(hw_qemu_guest_agent=yes), the guest runs and its agent answers a ping, the agent sets the
new root password hash (virDomainSetUserPassword, crypted: the plain password never leaves
the API process) in the running guest -> ACTIVE, no reboot. Offline otherwise, and when
the agent refuses: a clean shutdown, the hash set in the disk's /etc/shadow, start ->
ACTIVE; the log says why the online path was not taken. Either path clears the ERROR of a
server whose create password was refused (its root was locked).
"""

from __future__ import annotations

import contextlib

import structlog

from agent.core.injection import InjectionBatcher
from agent.core.workflows.base import WorkflowDeps
from agent.core.workflows.create import base_path, injection_request
from agent.core.workflows.guest_ops import ActionWorkflow, GuestOps
from agent.core.workflows.rescue import step_index
from agent.errors import DomainNotFound, HypervisorError, HypervisorUnavailable, ImageNotFound
from agent.model.domain import PowerState
from agent.model.injection import InjectionRequest
from agent.model.job import Job
from agent.model.server import Server
from agent.model.states import TaskState, VmState

log = structlog.get_logger("agent.actions")

REBUILD_STEPS = ("off", "disk", "swapped", "done")
PASSWORD_STEPS = ("off", "injected", "done")
ROOT_USER = "root"  # changePassword sets the admin (root) password, as Nova's libvirt driver


class RebuildWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.REBUILDING})

    def __init__(self, deps: WorkflowDeps, ops: GuestOps, injector: InjectionBatcher) -> None:
        super().__init__(deps, ops)
        self.injector = injector

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.REBUILDING)
        image = d.images.get(job.payload["image_id"])
        flavor = d.flavors.get(server.flavor_id)
        files = d.files(server.id)
        fresh = files.dir / "disk.rebuild.qcow2"
        done = step_index(job, REBUILD_STEPS)
        if done < 1:  # the disk is thrown away: no clean shutdown to wait for
            with contextlib.suppress(DomainNotFound):  # (a server in ERROR may have none)
                await self.ops.destroy(server.id)
            job = await d.checkpoint(job, "off", {"power_state": PowerState.SHUTDOWN, "progress": 20})
        d.ensure_not_taken_over(job, TaskState.REBUILDING)
        if done < 2:  # made again from its base if a restart came mid-way
            base = base_path(d, image)
            await d.blocking(d.disks.cache_base, image.disk_file, base)
            fresh.unlink(missing_ok=True)
            await d.blocking(d.disks.create_overlay, base, image.disk_format, fresh, flavor.disk)
            await self.injector.inject(injection_request(job, fresh))
            job = await d.checkpoint(job, "disk", {"progress": 60})
        d.ensure_not_taken_over(job, TaskState.REBUILDING)
        if done < 3:
            # The old disk goes: no managed save or rescue overlay may outlive it.
            await self.ops.discard_state(server.id)
            if fresh.exists():
                fresh.replace(files.disk)
            job = await d.checkpoint(job, "swapped", {"image_id": image.uuid, "progress": 80})
        await self.ops.define(server, image=image)
        await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, TaskState.REBUILDING)
        await self.done(job, VmState.ACTIVE, "rebuilt", image_id=image.uuid, progress=100,
                  power_state=PowerState.RUNNING, launched_at=d.now())


class ChangePasswordWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.UPDATING_PASSWORD})

    def __init__(self, deps: WorkflowDeps, ops: GuestOps, injector: InjectionBatcher) -> None:
        super().__init__(deps, ops)
        self.injector = injector

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.UPDATING_PASSWORD)
        done = step_index(job, PASSWORD_STEPS)
        # A restart before any checkpoint tries online again: setting a hash is idempotent.
        if done < 1 and await self._set_online(server, job.payload["admin_pass_hash"]):
            d.ensure_not_taken_over(job, TaskState.UPDATING_PASSWORD)
            await self.done(job, VmState.ACTIVE, "password changed", power_state=PowerState.RUNNING)
            return
        if done < 1:
            await self.ops.power_off(server.id)
            job = await d.checkpoint(job, "off", {"power_state": PowerState.SHUTDOWN})
        d.ensure_not_taken_over(job, TaskState.UPDATING_PASSWORD)
        if done < 2:  # setting the same hash twice is harmless
            await self.injector.inject(InjectionRequest(  # the guest's own disk: alone
                disk=d.files(server.id).disk, root_password_hash=job.payload["admin_pass_hash"],
                guest_written=True))
            job = await d.checkpoint(job, "injected")
        await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, TaskState.UPDATING_PASSWORD)
        await self.done(job, VmState.ACTIVE, "password changed", power_state=PowerState.RUNNING)

    async def _set_online(self, server: Server, password_hash: str) -> bool:
        """True when the guest agent set the hash in the running guest; False when the
        offline path has to (the log says why; never the hash)."""
        d = self.deps
        reason = await self._why_not_online(server)
        if reason is None:
            try:
                await d.blocking(d.hypervisor.set_user_password, server.id, ROOT_USER,
                                 password_hash, True)
            except (DomainNotFound, HypervisorUnavailable):
                raise  # the offline path could do no better
            except HypervisorError as e:  # e.g. the guest's chpasswd failed
                reason = f"the guest agent did not set it: {e}"
            else:
                log.info("change_password.online", server_id=str(server.id))
                return True
        log.info("change_password.offline", server_id=str(server.id), reason=reason)
        return False

    async def _why_not_online(self, server: Server) -> str | None:
        """Why the guest agent cannot set the password now, or None when it can."""
        try:
            image = self.deps.images.get(str(server.image_id))
        except ImageNotFound:
            return "the server's image is no longer in the catalog"
        if not image.qemu_guest_agent:
            return "the image declares no guest agent"
        if await self.ops.power(server.id) is not PowerState.RUNNING:
            return "the guest is not running"
        if not await self.deps.blocking(self.deps.hypervisor.guest_agent_ready, server.id):
            return "the guest agent did not answer a ping"
        return None
