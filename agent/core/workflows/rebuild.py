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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import structlog

from agent.core.injection import InjectionBatcher
from agent.core.workflows.base import Outcome, Run, Step, WorkflowDeps
from agent.core.workflows.create import fresh_overlay, injection_request
from agent.core.workflows.guest_ops import ActionWorkflow, GuestOps
from agent.errors import DomainNotFound, HypervisorError, HypervisorUnavailable, ImageNotFound
from agent.model.domain import PowerState
from agent.model.injection import InjectionRequest
from agent.model.server import Server
from agent.model.states import VmState

log = structlog.get_logger("agent.actions")

ROOT_USER = "root"  # changePassword sets the admin (root) password, as Nova's libvirt driver


class RebuildWorkflow(ActionWorkflow):
    def __init__(self, deps: WorkflowDeps, ops: GuestOps, injector: InjectionBatcher) -> None:
        super().__init__(deps, ops)
        self.injector = injector

    def steps(self) -> Mapping[str, Step]:
        return {"off": self._off, "disk": self._disk, "swapped": self._swap, "done": self.run}

    def _fresh(self, run: Run) -> Path:
        return self.deps.files(run.server.id).dir / "disk.rebuild.qcow2"

    async def _off(self, run: Run) -> Outcome:
        """The plug pulled: the disk is thrown away, no clean shutdown to wait for."""
        with contextlib.suppress(DomainNotFound):  # (a server in ERROR may have none)
            await self.ops.destroy(run.server.id)
        return Outcome({"power_state": PowerState.SHUTDOWN, "progress": 20})

    async def _disk(self, run: Run) -> Outcome:
        """The new disk, made again from its base if a restart came mid-way."""
        d = self.deps
        fresh = self._fresh(run)
        await fresh_overlay(d, d.images.get(run.job.payload["image_id"]), fresh,
                            d.flavors.get(run.server.flavor_id).disk)
        await self.injector.inject(injection_request(run.job, fresh))
        return Outcome({"progress": 60})

    async def _swap(self, run: Run) -> Outcome:
        # The old disk goes: no managed save or rescue overlay may outlive it.
        d = self.deps
        await self.ops.discard_state(run.server.id)
        fresh = self._fresh(run)
        if await d.blocking(d.disks.exists, fresh):
            await d.blocking(d.disks.replace, fresh, d.files(run.server.id).disk)
        image = d.images.get(run.job.payload["image_id"])
        return Outcome({"image_id": image.uuid, "progress": 80})

    async def run(self, run: Run) -> Outcome:
        d = self.deps
        image = d.images.get(run.job.payload["image_id"])
        await self.ops.define(run.server, image=image)
        await self.ops.boot(run.server.id)
        return self.finished(VmState.ACTIVE, "rebuilt", image_id=image.uuid, progress=100,
                             power_state=PowerState.RUNNING, launched_at=d.now())


class ChangePasswordWorkflow(ActionWorkflow):
    def __init__(self, deps: WorkflowDeps, ops: GuestOps, injector: InjectionBatcher) -> None:
        super().__init__(deps, ops)
        self.injector = injector

    def steps(self) -> Mapping[str, Step]:
        return {"off": self._off, "injected": self._inject, "done": self.run}

    async def _off(self, run: Run) -> Outcome:
        """Online when the guest agent can (then the job is done here; a restart before
        it tries again: setting a hash is idempotent), else the guest shut down."""
        if await self._set_online(run.server, run.job.payload["admin_pass_hash"]):
            return replace(self.finished(VmState.ACTIVE, "password changed",
                                         power_state=PowerState.RUNNING), finish=True)
        await self.ops.power_off(run.server.id)
        return Outcome({"power_state": PowerState.SHUTDOWN})

    async def _inject(self, run: Run) -> None:
        # Setting the same hash twice is harmless. The guest's own disk: alone.
        await self.injector.inject(InjectionRequest(
            disk=self.deps.files(run.server.id).disk,
            root_password_hash=run.job.payload["admin_pass_hash"], guest_written=True))

    async def run(self, run: Run) -> Outcome:
        await self.ops.boot(run.server.id)
        return self.finished(VmState.ACTIVE, "password changed", power_state=PowerState.RUNNING)

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
