"""Server operations the API offers: every change is committed (server and job in one
transaction) before the caller answers, then the job runner is told to look."""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agent.core.flavors import FlavorCatalog
from agent.core.keypairs import authorized_key_line
from agent.core.networks import PortService
from agent.core.personality import check_personality
from agent.core.quotas import Quotas
from agent.core.server_groups import ServerGroupService
from agent.core.sha512_crypt import sha512_crypt
from agent.core.validation import (
    check_access_ip,
    check_image_fits,
    check_metadata_items,
    check_metadata_quota,
    check_name,
    compile_name_filter,
    ref_id,
)
from agent.errors import (
    FlavorNotFound,
    ImageNotFound,
    InvalidInput,
    MetadataItemNotFound,
    PolicyForbidden,
    QuotaExceeded,
    ServerNotFound,
)
from agent.model.flavor import Flavor
from agent.model.job import Job, JobKind
from agent.model.network import NetworkRequest, Port
from agent.model.passwords import PasswordPolicy, generate_password
from agent.model.requests import (
    DEFAULT_NAME_TEMPLATE,
    CreateServer,
    Limits,
    RequestContext,
    ServerQuery,
    multi_instance_name,
)
from agent.model.server import Server
from agent.model.states import Status, TaskState
from agent.model.transitions import Action, check_action
from agent.protocols import ImageCatalog, NewServer, ServerExpectation, Store

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def expect(server: Server) -> ServerExpectation:
    return ServerExpectation(vm_state=server.vm_state, task_state=server.task_state)


_RESERVATION_CHARS = string.ascii_lowercase + string.digits


def new_reservation_id() -> str:
    """As Nova's: "r-" and 8 random lowercase letters and digits."""
    return "r-" + "".join(secrets.choice(_RESERVATION_CHARS) for _ in range(8))


def check_multi_networks(networks: tuple[NetworkRequest, ...] | None) -> None:
    """A port or a fixed IP can serve one server only (Nova refuses both for max_count > 1)."""
    for net in networks or ():
        if net.port_id is not None:
            raise InvalidInput("Unable to launch multiple instances with a single configured "
                               "port ID. Please launch your instance one by one with "
                               "different ports.", "networks")
        if net.fixed_ip is not None:
            raise InvalidInput("max_count cannot be greater than 1 if an fixed_ip is specified.",
                               "networks")


class CreatedServers(BaseModel):
    """What a create made: the servers (in count order), their shared admin password
    (to return once) and reservation id."""

    model_config = ConfigDict(frozen=True)

    servers: list[Server]
    admin_pass: str = Field(repr=False)
    reservation_id: str


class ServerService:
    def __init__(self, store: Store, images: ImageCatalog, flavors: FlavorCatalog,
                 limits: Limits, password_policy: PasswordPolicy,
                 kick: Callable[[UUID], None], *, ports: PortService, now: Clock = utcnow,
                 max_page: int = 1000, name_template: str = DEFAULT_NAME_TEMPLATE) -> None:
        self.store = store
        self.images = images
        self.flavors = flavors
        self.limits = limits
        self.password_policy = password_policy
        self.kick = kick
        self.now = now
        self.max_page = max_page
        self.ports = ports  # a host without networks has an empty catalog: no NICs
        self.name_template = name_template  # names of a multi-create's servers
        self.quotas = Quotas(store, flavors, limits)
        self.groups = ServerGroupService(store, limits, now)  # /os-server-groups, the hint
        # Quota and addresses are checked by reading, then committed by an awaited write:
        # creates (and port creates) take turns from the check to the commit, so two of
        # them never both fit the last free slot or pick the same address.
        self.allocating = ports.allocating

    # -- reads ------------------------------------------------------------------------
    def get(self, ctx: RequestContext, server_id: UUID) -> Server:
        server = self.store.get_server(server_id, None if ctx.is_admin else ctx.project_id)
        if server is None:
            raise ServerNotFound(f"Instance {server_id} could not be found.")
        return server

    def get_live(self, ctx: RequestContext, server_id: UUID) -> Server:
        """A server that is not deleted: deleted ones are gone for every action."""
        server = self.get(ctx, server_id)
        if server.deleted_at is not None:
            raise ServerNotFound(f"Instance {server_id} could not be found.")
        return server

    def revision(self) -> int:
        """Increases with every committed change (Store.revision): an answer computed after
        it returned R is still right while it returns R."""
        return self.store.revision()

    def list(self, ctx: RequestContext, query: ServerQuery) -> tuple[list[Server], bool]:
        """Servers matching the query, one page; True when another page follows. Filters
        the store can apply, and paging when nothing is left to filter here, run in SQL:
        a page of 10 reads 11 rows, not every server."""
        project = self._listed_project(ctx, query)
        include_deleted = self._lists_deleted(ctx, query)
        if query.status_matches_nothing:
            return [], False
        limit = min(query.limit if query.limit is not None else self.max_page, self.max_page)
        image_id = None
        if query.image:
            try:
                image_id = UUID(ref_id(query.image))
            except ValueError:  # not an image id: no server has it, nor the marker
                if query.marker is not None:
                    raise InvalidInput(f"marker [{query.marker}] not found", "marker") from None
                return [], False
        scope = {"changes_since": query.changes_since, "image_id": image_id,
                 "flavor_id": ref_id(query.flavor) if query.flavor else None,
                 "reservation_id": query.reservation_id, "include_deleted": include_deleted}
        if not query.name and not query.statuses:
            page = self.store.list_servers(project, **scope, marker=query.marker, limit=limit + 1)
            return page[:limit], len(page) > limit
        servers = self.store.list_servers(project, **scope)
        if query.name:
            search = compile_name_filter(query.name)
            servers = [s for s in servers if search(s.name)]
        if query.statuses:
            servers = [s for s in servers if s.status in query.statuses]
        if query.marker is not None:
            ids = [s.id for s in servers]
            if query.marker not in ids:
                raise InvalidInput(f"marker [{query.marker}] not found", "marker")
            servers = servers[ids.index(query.marker) + 1:]
        return servers[:limit], len(servers) > limit

    @staticmethod
    def _lists_deleted(ctx: RequestContext, query: ServerQuery) -> bool:
        """status=deleted alone lists deleted servers, for admins only (as in Nova)."""
        if query.statuses != {Status.DELETED}:
            return False
        if not ctx.is_admin:
            raise PolicyForbidden("Only administrators may list deleted instances")
        return True

    @staticmethod
    def _listed_project(ctx: RequestContext, query: ServerQuery) -> str | None:
        """Whose servers a list shows: the caller's project, unless an admin asks for
        all_tenants (then every project, or the one named by project_id/tenant_id)."""
        if not query.all_tenants:
            return ctx.project_id
        if not ctx.is_admin:
            raise PolicyForbidden("Policy doesn't allow os_compute_api:servers:index:get_all_tenants"
                                  " to be performed.")
        return query.project_id

    # -- create -----------------------------------------------------------------------
    async def create(self, ctx: RequestContext, req: CreateServer) -> tuple[Server, str]:
        """Commit a new server and its create job; the admin password to return once."""
        made = await self.create_many(ctx, req)
        return made.servers[0], made.admin_pass

    async def create_many(self, ctx: RequestContext, req: CreateServer) -> CreatedServers:
        """Commit min_count..max_count servers (as many as the quota allows), each with its
        create job and NICs, in one transaction: all of them or none. As in Nova, they
        share one admin password and one reservation id, and are named by the template."""
        async with self.allocating:
            return await self._create_many(ctx, req)

    async def _create_many(self, ctx: RequestContext, req: CreateServer) -> CreatedServers:
        max_count = req.max_count or req.min_count
        if req.min_count > max_count:
            raise InvalidInput("min_count must be <= max_count", "min_count")
        name = check_name(req.name)
        if max_count > 1:
            check_multi_networks(req.networks)
        try:
            image = self.images.get(ref_id(req.image_ref))
        except ImageNotFound:
            raise InvalidInput("Can not find requested image", "imageRef") from None
        try:
            flavor = self.flavors.get(ref_id(req.flavor_ref))
        except FlavorNotFound as e:
            raise InvalidInput(str(e), "flavorRef") from None
        check_image_fits(image, flavor, "flavorRef")
        key_data = self.key_data(ctx, req.key_name)
        check_metadata_items(req.metadata)
        check_metadata_quota(len(req.metadata), self.limits)
        personality = check_personality(req.personality, self.limits, image)
        ipv4 = check_access_ip(req.access_ipv4, 4)
        ipv6 = check_access_ip(req.access_ipv6, 6)
        groups = tuple(check_name(g, "security_groups") for g in req.security_groups)
        hints, server_group = self.groups.check_hints(ctx, req.scheduler_hints)
        count = self._fit_quota(ctx, flavor, req.min_count, max_count)
        self.groups.check_members_quota(server_group, count)
        reservation_id = new_reservation_id()
        ids = [uuid.uuid4() for _ in range(count)]
        names = [name] if count == 1 else [
            check_name(multi_instance_name(self.name_template, req.name, i, n), "name")
            for n, i in enumerate(ids, start=1)]
        nics = self._plan_nics(ctx, req, ids)  # checked now, committed with the servers

        password = req.admin_pass.get_secret_value() if req.admin_pass else None
        payload: dict[str, object] = {}
        if personality:
            # Kept base64 in the job (JSON) until injected, then the payload is cleared.
            payload["personality"] = [
                {"path": f.path, "contents": base64.b64encode(f.contents).decode()}
                for f in personality]
        if key_data is not None:  # public: kept in the job until injected, like the files
            payload["authorized_keys"] = [key_data]
        if password is None:
            password = generate_password(self.password_policy)
        violations = self.password_policy.violations(password)
        if violations:
            # The spec: the server may go to ERROR when the password does not meet the
            # policy, and changePassword resets it. So accept, build, and fault it.
            payload["password_violations"] = violations
        else:
            payload["admin_pass_hash"] = sha512_crypt(password)
        if count > 1:  # the injection batcher waits for the others of the batch
            payload["batch"] = {"key": reservation_id, "size": count}

        now = self.now()
        batch = []
        for server_id, name, ports in zip(ids, names, nics, strict=True):
            server = Server(id=server_id, project_id=ctx.project_id, user_id=ctx.user_id,
                            name=name, image_id=image.uuid, flavor_id=flavor.id,
                            metadata=dict(req.metadata), access_ipv4=ipv4, access_ipv6=ipv6,
                            shutdown_terminate=req.shutdown_terminate,
                            reservation_id=reservation_id, key_name=req.key_name, key_data=key_data,
                            security_groups=groups, scheduler_hints=hints,
                            created_at=now, updated_at=now)
            job = Job(id=uuid.uuid4(), server_id=server.id, kind=JobKind.CREATE,
                      payload=payload, created_at=now, updated_at=now)
            batch.append(NewServer(server, job, ports))
        await self.store.create_servers(batch)
        for new in batch:
            self.kick(new.server.id)
        return CreatedServers(servers=[n.server for n in batch], admin_pass=password,
                              reservation_id=reservation_id)

    def key_data(self, ctx: RequestContext, key_name: str | None) -> str | None:
        """The public key (one authorized_keys line) of the caller's keypair `key_name`;
        None for no key. An unknown name is a 400, as Nova words it."""
        if key_name is None:
            return None
        keypair = self.store.get_keypair(ctx.user_id, key_name)
        if keypair is None:
            raise InvalidInput("Invalid key_name provided.", "key_name")
        return authorized_key_line(keypair.public_key)

    def _plan_nics(self, ctx: RequestContext, req: CreateServer,
                   server_ids: list[UUID]) -> list[list[Port]]:
        return self.ports.plan_servers_ports(ctx, req.networks, server_ids)

    def _fit_quota(self, ctx: RequestContext, flavor: Flavor, min_count: int,
                   max_count: int) -> int:
        """How many servers of this flavor to make: max_count if they fit the project's
        quota, else as many as fit; QuotaExceeded (nothing made) if not even min_count do,
        naming the first limit they break, worded as Nova's TooManyInstances."""
        usage = self.quotas.usage(ctx.project_id)
        used = {"instances": usage.instances, "cores": usage.cores, "ram": usage.ram}
        limit = {"instances": self.limits.max_total_instances,
                 "cores": self.limits.max_total_cores, "ram": self.limits.max_total_ram}
        each = {"instances": 1, "cores": flavor.vcpus, "ram": flavor.ram}
        fits = min((limit[r] - used[r]) // each[r] for r in each if each[r] > 0)
        if fits >= min_count:
            return min(fits, max_count)
        for r in each:
            if used[r] + min_count * each[r] > limit[r]:
                requested = (min_count * each[r] if r != "instances" or min_count == max_count
                             else f"{min_count}-{max_count}")
                raise QuotaExceeded(f"Quota exceeded for {r}: Requested {requested}, but already "
                                    f"used {used[r]} of {limit[r]} {r}")
        raise AssertionError("unreachable: some limit is broken when min_count does not fit")

    # -- update and delete --------------------------------------------------------------
    async def update(self, ctx: RequestContext, server_id: UUID, *, name: str | None = None,
               access_ipv4: str | None = None, access_ipv6: str | None = None) -> Server:
        server = self.get_live(ctx, server_id)
        check_action(Action.UPDATE, server.vm_state, server.task_state)
        changes: dict[str, object] = {}
        if name is not None:
            changes["name"] = check_name(name)
        if access_ipv4 is not None:
            changes["access_ipv4"] = check_access_ip(access_ipv4, 4)
        if access_ipv6 is not None:
            changes["access_ipv6"] = check_access_ip(access_ipv6, 6)
        return await self.store.update_server(server.id, changes, cause="update")

    async def delete(self, ctx: RequestContext, server_id: UUID) -> None:
        server = self.get_live(ctx, server_id)
        if server.task_state is TaskState.DELETING:
            return  # already being deleted: a retried DELETE is a success (204), as in Nova
        task = check_action(Action.DELETE, server.vm_state, server.task_state)
        now = self.now()
        job = Job(id=uuid.uuid4(), server_id=server.id, kind=JobKind.DELETE, created_at=now,
                  updated_at=now)
        await self.store.add_job(job, {"task_state": task}, cause="delete requested",
                           expect=expect(server))
        self.kick(server.id)

    # -- metadata -------------------------------------------------------------------------
    async def set_metadata(self, ctx: RequestContext, server_id: UUID, items: dict[str, str], *,
                     replace: bool) -> dict[str, str]:
        """Merge (POST) or replace (PUT) the server's metadata; the result is returned."""
        server = self.get_live(ctx, server_id)
        check_action(Action.METADATA, server.vm_state, server.task_state)
        check_metadata_items(items)
        merged = dict(items) if replace else {**server.metadata, **items}
        check_metadata_quota(len(merged), self.limits)
        updated = await self.store.update_server(server.id, {"metadata": merged}, cause="metadata",
                                           expect=expect(server))
        return updated.metadata

    async def delete_metadata_item(self, ctx: RequestContext, server_id: UUID, key: str) -> None:
        server = self.get_live(ctx, server_id)
        check_action(Action.METADATA, server.vm_state, server.task_state)
        if key not in server.metadata:
            raise MetadataItemNotFound(f"Metadata item was not found: {key[:255]}")
        rest = {k: v for k, v in server.metadata.items() if k != key}
        await self.store.update_server(server.id, {"metadata": rest}, cause="metadata",
                                 expect=expect(server))
