"""Server actions (POST /servers/{id}/action): each is checked against the transition
table and committed (the job and the server's task_state in one transaction, with a
compare-and-set on the state it was checked in) before the caller answers; then the job
runner is told to look. The work itself is in agent/core/workflows/."""

from __future__ import annotations

import base64
import uuid
from typing import Any
from uuid import UUID

from agent.core.personality import check_personality
from agent.core.servers import ServerService, expect
from agent.core.sha512_crypt import sha512_crypt
from agent.core.validation import (
    check_access_ip,
    check_image_fits,
    check_metadata_items,
    check_metadata_quota,
    check_name,
    ref_id,
)
from agent.errors import FlavorNotFound, ImageNotFound, InvalidInput, QuotaExceeded
from agent.model.actions import RebuildServer
from agent.model.flavor import Flavor
from agent.model.image import Image
from agent.model.job import Job, JobKind
from agent.model.passwords import generate_password
from agent.model.requests import RequestContext
from agent.model.server import Server
from agent.model.states import VmState
from agent.model.transitions import Action, check_action

# The action, and the job kind that does it, of the actions that take no input.
SIMPLE: dict[str, tuple[Action, JobKind]] = {
    "os-stop": (Action.STOP, JobKind.STOP),
    "os-start": (Action.START, JobKind.START),
    "suspend": (Action.SUSPEND, JobKind.SUSPEND),
    "resume": (Action.RESUME, JobKind.RESUME),
    "unrescue": (Action.UNRESCUE, JobKind.UNRESCUE),
    "confirmResize": (Action.CONFIRM_RESIZE, JobKind.CONFIRM_RESIZE),
    "revertResize": (Action.REVERT_RESIZE, JobKind.REVERT_RESIZE),
}


class ServerActions:
    def __init__(self, servers: ServerService) -> None:
        self.servers = servers

    # -- commit -------------------------------------------------------------------------
    def _check(self, ctx: RequestContext, server_id: UUID, action: Action) -> Server:
        server = self.servers.get_live(ctx, server_id)
        check_action(action, server.vm_state, server.task_state)
        return server

    async def _commit(self, server: Server, action: Action, kind: JobKind,
                payload: dict[str, Any] | None = None,
                changes: dict[str, Any] | None = None) -> Server:
        task = check_action(action, server.vm_state, server.task_state)
        now = self.servers.now()
        job = Job(id=uuid.uuid4(), server_id=server.id, kind=kind, payload=payload or {},
                  created_at=now, updated_at=now)
        stored = await self.servers.store.add_job(job, {"task_state": task, **(changes or {})},
                                            cause=f"{action.value} requested",
                                            expect=expect(server))
        self.servers.kick(server.id)
        return stored

    def _password_hash(self, password: str) -> str:
        violations = self.servers.password_policy.violations(password)
        if violations:
            raise InvalidInput("adminPass does not meet the password policy: it needs "
                               + ", ".join(violations), "adminPass")
        return sha512_crypt(password)

    def _image(self, ref: str, field: str) -> Image:
        try:
            return self.servers.images.get(ref_id(ref))
        except ImageNotFound:
            raise InvalidInput("Can not find requested image", field) from None

    # -- the actions --------------------------------------------------------------------
    async def simple(self, ctx: RequestContext, server_id: UUID, name: str) -> Server:
        """An action without input: os-stop, os-start, suspend, resume, unrescue,
        confirmResize, revertResize."""
        action, kind = SIMPLE[name]
        return await self._commit(self._check(ctx, server_id, action), action, kind)

    async def reboot(self, ctx: RequestContext, server_id: UUID, *, hard: bool) -> Server:
        action = Action.REBOOT_HARD if hard else Action.REBOOT_SOFT
        server = self._check(ctx, server_id, action)
        return await self._commit(server, action, JobKind.REBOOT, {"hard": hard})

    async def rescue(self, ctx: RequestContext, server_id: UUID, admin_pass: str | None = None,
               rescue_image_ref: str | None = None) -> str:
        """Returns the rescue admin password (the one given, or a generated one)."""
        server = self._check(ctx, server_id, Action.RESCUE)
        image = self._image(rescue_image_ref, "rescue_image_ref") if rescue_image_ref else None
        password = admin_pass if admin_pass is not None else generate_password(
            self.servers.password_policy)
        payload = {"admin_pass_hash": self._password_hash(password)}
        if image is not None:
            payload["rescue_image_id"] = str(image.uuid)
        await self._commit(server, Action.RESCUE, JobKind.RESCUE, payload)
        return password

    async def resize(self, ctx: RequestContext, server_id: UUID, flavor_ref: str) -> Server:
        server = self._check(ctx, server_id, Action.RESIZE)
        try:
            new = self.servers.flavors.get(ref_id(flavor_ref))
        except FlavorNotFound as e:
            raise InvalidInput(str(e), "flavorRef") from None
        old = self.servers.flavors.get(server.flavor_id)
        if new.id == old.id:
            raise InvalidInput("When resizing, instances must change flavor!", "flavorRef")
        if new.disk < old.disk:
            raise InvalidInput("Resize to a smaller disk flavor is not allowed.", "flavorRef")
        image = self.servers.images.get(str(server.image_id))
        check_image_fits(image, new, "flavorRef")
        self._check_resize_quota(ctx, server, old, new)
        return await self._commit(server, Action.RESIZE, JobKind.RESIZE, {
            "old_flavor_id": old.id, "new_flavor_id": new.id,
            "power_on": server.vm_state is not VmState.STOPPED})

    def _check_resize_quota(self, ctx: RequestContext, server: Server, old: Flavor,
                            new: Flavor) -> None:
        limits = self.servers.limits
        others = self.servers.quotas.usage(server.project_id, without=server.id)
        cores, ram = others.cores, others.ram
        if new.vcpus > old.vcpus and cores + new.vcpus > limits.max_total_cores:
            raise QuotaExceeded(f"Quota exceeded for cores: Requested {new.vcpus - old.vcpus}, "
                                f"but already used {cores + old.vcpus} of "
                                f"{limits.max_total_cores} cores")
        if new.ram > old.ram and ram + new.ram > limits.max_total_ram:
            raise QuotaExceeded(f"Quota exceeded for ram: Requested {new.ram - old.ram}, but "
                                f"already used {ram + old.ram} of {limits.max_total_ram} ram")

    async def rebuild(self, ctx: RequestContext, server_id: UUID, req: RebuildServer) -> tuple[Server, str]:
        """Returns the server as committed (status REBUILD) and its new admin password."""
        server = self._check(ctx, server_id, Action.REBUILD)
        image = self._image(req.image_ref, "imageRef")
        flavor = self.servers.flavors.get(server.flavor_id)
        check_image_fits(image, flavor, "imageRef")
        changes: dict[str, Any] = {}
        if req.name is not None:
            changes["name"] = check_name(req.name)
        if req.metadata is not None:
            check_metadata_items(req.metadata)
            check_metadata_quota(len(req.metadata), self.servers.limits)
            changes["metadata"] = dict(req.metadata)
        if req.access_ipv4 is not None:
            changes["access_ipv4"] = check_access_ip(req.access_ipv4, 4)
        if req.access_ipv6 is not None:
            changes["access_ipv6"] = check_access_ip(req.access_ipv6, 6)
        if req.key_name_given:
            changes["key_name"] = req.key_name
            changes["key_data"] = self.servers.key_data(ctx, req.key_name)
        key_data = changes["key_data"] if req.key_name_given else server.key_data
        personality = check_personality(req.personality, self.servers.limits, image)
        password = (req.admin_pass.get_secret_value() if req.admin_pass is not None
                    else generate_password(self.servers.password_policy))
        payload: dict[str, Any] = {"image_id": str(image.uuid),
                                   "admin_pass_hash": self._password_hash(password)}
        if key_data is not None:  # the fresh disk gets the server's key again
            payload["authorized_keys"] = [key_data]
        if personality:  # base64 in the job until injected, then the payload is cleared
            payload["personality"] = [{"path": f.path, "contents": base64.b64encode(f.contents).decode()}
                                      for f in personality]
        stored = await self._commit(server, Action.REBUILD, JobKind.REBUILD, payload,
                              {**changes, "progress": 0})
        return stored, password

    async def change_password(self, ctx: RequestContext, server_id: UUID, admin_pass: str) -> Server:
        server = self._check(ctx, server_id, Action.CHANGE_PASSWORD)
        payload = {"admin_pass_hash": self._password_hash(admin_pass)}
        return await self._commit(server, Action.CHANGE_PASSWORD, JobKind.CHANGE_PASSWORD, payload)
