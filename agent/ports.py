"""The Protocols the core needs. Adapters implement them; tests/unit has fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from agent.errors import InjectionError, StaleServer, TakenOver
from agent.model.domain import DomainSpec, PowerState
from agent.model.fleet import EventMessage, Heartbeat, JobMessage
from agent.model.image import Image
from agent.model.injection import InjectionRequest, InjectionResult
from agent.model.job import Job, JobStatus, StatusEvent
from agent.model.keypair import GeneratedKey, Keypair
from agent.model.network import DhcpHost, Network, Port
from agent.model.server import Server
from agent.model.states import TaskState, VmState


class ServerExpectation(BaseModel):
    """What a compare-and-set update expects to find."""

    model_config = ConfigDict(frozen=True)

    vm_state: VmState
    task_state: TaskState | None


# Rules every Store keeps, shared by its implementations (the SQLite one and the
# in-memory twin of the unit tests), so they cannot drift apart.
def check_change_keys(changes: dict[str, Any], known: frozenset[str], fixed: frozenset[str],
                      what: str) -> None:
    """ValueError for a field the model does not have, or one the store owns."""
    if unknown := sorted(set(changes) - known):
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}")
    if fixed_ := sorted(set(changes) & fixed):
        raise ValueError(f"{what} field(s) cannot be changed: {', '.join(fixed_)}")


def check_expect(current: Server, expect: ServerExpectation | None) -> None:
    """StaleServer unless the server is in the expected vm_state/task_state."""
    if expect is None:
        return
    if (current.vm_state, current.task_state) != (expect.vm_state, expect.task_state):
        raise StaleServer(
            f"server {current.id} is vm_state={current.vm_state}, task_state={current.task_state}"
            f" (expected vm_state={expect.vm_state}, task_state={expect.task_state})")


def check_task(current: Server, expect_task_state: TaskState | None) -> None:
    """TakenOver unless the server still carries the task the job runs under."""
    if current.task_state is not expect_task_state:
        raise TakenOver(f"server {current.id} is now task_state={current.task_state} "
                        f"(the job runs under {expect_task_state})")


def job_advanced(job: Job, step: str, now: datetime, end: JobStatus | None = None,
                 error: str = "") -> Job:
    """The job with `step` recorded: a step done starts the try count again (this run is
    the first try at the next one); with `end`, ended and its payload cleared."""
    changes: dict[str, Any] = {"step": step, "updated_at": now}
    if step != job.step:
        changes["attempts"] = 1
    if end is not None:
        changes.update(status=end, error=error, payload={})
    return Job.model_validate({**job.model_dump(), **changes})


class NewServer(NamedTuple):
    """A server to insert with its first job and its NICs (see Store.create_servers)."""

    server: Server
    job: Job
    ports: Sequence[Port] = ()


def check_new_server(new: NewServer) -> None:
    if new.job.server_id != new.server.id:
        raise ValueError(f"job {new.job.id} is for server {new.job.server_id}, not {new.server.id}")


class Hypervisor(Protocol):
    """Defines, starts and stops guests. Raises DomainNotFound for an unknown uuid."""

    def define(self, spec: DomainSpec) -> None: ...
    def start(self, uuid: UUID) -> None: ...
    def shutdown(self, uuid: UUID) -> None: ...
    def destroy(self, uuid: UUID) -> None: ...
    def undefine(self, uuid: UUID) -> None: ...
    def power_state(self, uuid: UUID) -> PowerState: ...
    def managed_save(self, uuid: UUID) -> None:
        """Save the running guest's memory to disk and stop it (libvirt managed save);
        the next start() restores it."""
        ...
    def has_managed_save(self, uuid: UUID) -> bool: ...
    def remove_managed_save(self, uuid: UUID) -> None:
        """Drop a managed save image (none is fine): the next start() boots afresh."""
        ...
    def domain_uuids(self) -> set[UUID]: ...
    def owned_domains(self, instances_dir: Path) -> dict[UUID, dict[str, str]]:
        """Domains that carry the agent's metadata and keep a disk under `instances_dir`
        (this agent's, not another agent's on the same libvirtd): uuid -> the metadata
        properties (server_id, project_id, ...)."""
        ...
    def domain_taps(self, uuid: UUID) -> list[str]:
        """The host tap devices the domain's NICs use, in order."""
        ...
    def guest_agent_ready(self, uuid: UUID) -> bool:
        """The guest's QEMU guest agent answers a ping within a few seconds. False when
        it does not (no channel, guest off, agent not installed or not running);
        DomainNotFound and HypervisorUnavailable still raise."""
        ...
    def set_user_password(self, uuid: UUID, user: str, password_or_hash: str,
                          crypted: bool) -> None:
        """Set a user's password in the running guest through its guest agent (which
        runs the guest's chpasswd); `crypted`: it is a crypt hash, as the guest's shadow
        file keeps it. HypervisorError when the agent or the guest refuses."""
        ...


class Disks(Protocol):
    """Guest disks: copy-on-write overlays on cached base images."""

    def create_overlay(self, base: Path, base_format: str, dest: Path, size_gib: int) -> None: ...
    def copy_resized(self, source: Path, dest: Path, size_gib: int) -> None:
        """Copy a guest disk to `dest` (same backing file, if any), grown to `size_gib`
        when that is larger (0 keeps its size); atomically, like create_overlay."""
        ...
    def cache_base(self, source: Path, dest: Path) -> None:
        """Copy an image's disk to `dest` (atomically) unless it is already there."""
        ...
    def remove_tree(self, path: Path) -> None:
        """Remove a guest's folder and everything in it; a missing folder is fine."""
        ...
    def fingerprint(self, path: Path) -> tuple[int, int]:
        """(size, mtime in ns) of a file: what a cached base is keyed by."""
        ...
    def exists(self, path: Path) -> bool: ...
    def remove_file(self, path: Path) -> None:
        """Remove a file; a missing one is fine."""
        ...
    def replace(self, source: Path, dest: Path) -> None:
        """Rename `source` to `dest` (atomically, replacing it)."""
        ...
    def write_record(self, path: Path, record: dict[str, Any]) -> None:
        """A small JSON record, written to a temp name, fsynced and renamed."""
        ...
    def read_record(self, path: Path) -> dict[str, Any] | None:
        """The record, or None when it is missing or unreadable."""
        ...


class Folders(Protocol):
    """The agent's own folders (instances, base images), as the start-up sweep reads and
    cleans them."""

    def entries(self, folder: Path) -> list[tuple[Path, bool]]:
        """The folder's entries by name, each with whether it is a folder; [] when
        `folder` is not a folder."""
        ...
    def remove_matching(self, folder: Path, suffix: str) -> tuple[list[Path], list[str]]:
        """Remove the files in `folder` whose names end in `suffix` (none is fine): those
        removed, and one message for each that could not be."""
        ...


class ConsoleFiles(Protocol):
    """A guest's serial console on this host: QEMU's unix socket and virtlogd's log of it.
    ConsoleNotAvailable when the guest has none."""

    def socket_path(self, server_id: UUID) -> Path: ...
    def log_tail(self, server_id: UUID, max_bytes: int) -> bytes:
        """At most the last `max_bytes` of the console log (only those are read)."""
        ...


class ImageCatalog(Protocol):
    def list(self) -> list[Image]: ...
    def get(self, ref: str) -> Image: ...


class StagedImage(Protocol):
    """An image being imported: a folder in the catalog's staging area, invisible to
    list() and get() until published; removed when its `staging()` block ends unpublished."""

    def copy_in(self, source: Path) -> Path:
        """Copy the disk file into the staged folder; the copy's path. InvalidInput (field
        "file") when `source` is not a regular file or cannot be read."""
        ...
    def publish(self, image: Image, extra: dict[str, Any]) -> Image:
        """Write the manifest (last, fsynced; with the disk's size in bytes beside `extra`),
        then rename the folder into the catalog."""
        ...


class ImageWriter(ImageCatalog, Protocol):
    """A catalog that images can be added to and removed from."""

    def staging(self) -> AbstractContextManager[StagedImage]: ...
    def remove(self, image: Image) -> None:
        """Take the image out of the catalog (its folder renamed away, then deleted)."""
        ...


class DiskInspector(Protocol):
    """What qemu-img says about a disk file, without trusting it."""

    def info(self, path: Path, fmt: str | None = None) -> dict[str, Any]:
        """`qemu-img info --output=json`; the format probed unless `fmt` is given.
        InvalidInput when qemu-img cannot read it."""
        ...
    def check(self, path: Path, fmt: str) -> dict[str, Any]:
        """`qemu-img check --output=json` (the report, also when it finds errors)."""
        ...
    def head(self, path: Path) -> bytes:
        """The file's first bytes (enough for any format's magic number)."""
        ...
    def digests(self, path: Path) -> dict[str, str]:
        """`checksum` (MD5, as Glance keeps it), `os_hash_algo` and `os_hash_value`."""
        ...


class Store(Protocol):
    """Durable state: servers (soft-deleted rows kept), jobs, status events.

    Every method is one transaction. Writes are `async`: they go to one writer that
    commits concurrent ones together (group commit) and answers only once the commit is
    durable; reads are synchronous and never wait on a write. Any change of a server's
    status (vm_state/task_state) appends a StatusEvent in the same transaction, so the
    event feed never misses one.
    """

    async def create_server(self, server: Server, job: Job, ports: Sequence[Port] = ()) -> None:
        """Insert the server, its first job and a first event (None -> its status).

        `ports` are the server's NICs, in the same transaction: one the agent made
        (created_by_agent) is inserted (IpAddressInUse/MacAddressInUse if its address is
        taken); a user's port is bound (device_id, device_owner, device_index set) only if
        it is still free (else PortInUse; PortNotFound if it is gone)."""
        ...

    async def create_servers(self, batch: Sequence[NewServer]) -> None:
        """create_server for each, all in one transaction: every server, job, port and
        event of the batch is committed, or none (a multi-create is all or nothing)."""
        ...

    def get_server(self, server_id: UUID, project_id: str | None = None) -> Server | None:
        """A server by id, deleted ones included; with project_id, only that project's."""
        ...

    def list_servers(self, project_id: str | None = None, *, changes_since: datetime | None = None,
                     include_deleted: bool = False, image_id: UUID | None = None,
                     flavor_id: str | None = None, reservation_id: str | None = None,
                     marker: UUID | None = None, limit: int | None = None) -> list[Server]:
        """Newest first (created_at, then id). changes_since implies deleted ones too,
        those with updated_at >= changes_since only. image_id, flavor_id, reservation_id:
        only those. marker: only the servers after it in that order (InvalidInput if it is
        not among them); limit: at most that many (paging in the store, so a page of 10
        reads 10 rows, not all)."""
        ...

    def server_state_counts(self) -> dict[tuple[VmState, TaskState | None], int]:
        """Servers not deleted, counted by (vm_state, task_state)."""
        ...

    def revision(self) -> int:
        """A number every committed change (servers, jobs, ports, anything) increases, so
        an answer computed from reads made after it returned R is still right while it
        returns R. This daemon's writes only: the store is its alone."""
        ...

    async def update_server(self, server_id: UUID, changes: dict[str, Any], *, cause: str,
                      expect: ServerExpectation | None = None) -> Server:
        """Apply `changes` (Server field names) and bump updated_at. With `expect`, only
        if the current vm_state/task_state match it, else raise StaleServer (a
        compare-and-set, so two actors never both win). Raises ServerNotFound."""
        ...

    async def add_job(self, job: Job, server_changes: dict[str, Any] | None = None, *,
                cause: str = "", expect: ServerExpectation | None = None) -> Server:
        """Insert a job and apply `server_changes` to its server in one transaction
        (e.g. set task_state=deleting with the delete job)."""
        ...

    def get_job(self, job_id: UUID) -> Job | None: ...

    # -- a job's life, as the job runner records it (each one transaction) -------------
    async def start_job(self, job_id: UUID) -> Job:
        """A try of the job begins: status running, attempts + 1."""
        ...

    async def advance(self, job: Job, step: str, server_changes: dict[str, Any] | None,
                      expect_task_state: TaskState | None, *, cause: str = "",
                      end: bool = False) -> Job:
        """Record `step` done, in one transaction with a compare-and-set: only if the
        server still carries `expect_task_state` (else TakenOver, nothing written), the
        job's step (its try count back to 1 when the step is new), `server_changes` and
        their status event; with `end`, the job SUCCEEDED too, its payload cleared."""
        ...

    async def end_job(self, job_id: UUID, status: JobStatus, *, error: str = "",
                      server_changes: dict[str, Any] | None = None,
                      expect_task_state: TaskState | None = None, cause: str = "") -> Job:
        """End the job (status, error, payload cleared) and, in the same transaction,
        apply `server_changes` if the server still carries `expect_task_state` (skipped
        if not: the server is a later job's now)."""
        ...

    async def pause_job(self, job_id: UUID) -> Job | None:
        """Give the current try back (attempts - 1, never below 0): a clean stop is no
        death under the job. None if there is no such job."""
        ...

    async def update_job(self, job_id: UUID, changes: dict[str, Any]) -> Job: ...

    def unfinished_jobs(self) -> list[Job]:
        """Jobs queued or running, oldest first."""
        ...

    def events_since(self, seq: int, project_id: str | None = None,
                     limit: int = 1000) -> list[StatusEvent]: ...

    def set_event_listener(self, listener: Callable[[], None] | None) -> None:
        """Call `listener` after each commit that appended events (from the committing
        thread, so it must only schedule work, e.g. wake the event feed)."""
        ...

    # -- webhook delivery cursors: the events table is the outbox; a cursor is the seq of
    # the last event a webhook URL acknowledged (2xx).
    async def webhook_cursor(self, url: str) -> int:
        """The URL's cursor; a URL without one gets one at the newest event (a new webhook
        starts from now, not from the whole history), in the same transaction."""
        ...

    async def advance_webhook_cursor(self, url: str, seq: int) -> None:
        """Move the URL's cursor forward to `seq` (never back)."""
        ...

    # -- ports: one IPv4 address each; (network_id, ip) and mac are UNIQUE in the store,
    # so two callers can never both get one address.
    async def add_port(self, port: Port) -> None:
        """Insert a port: IpAddressInUse or MacAddressInUse when taken."""
        ...

    def get_port(self, port_id: UUID) -> Port | None: ...

    def list_ports(self, *, network_id: UUID | None = None, device_id: str | None = None,
                   project_id: str | None = None) -> list[Port]:
        """Ports matching every filter given, in NIC order (device_index), then oldest first."""
        ...

    async def set_port_status(self, port_ids: Sequence[UUID], status: str) -> None:
        """Set the status of these ports (missing ones are skipped)."""
        ...

    async def delete_port(self, port_id: UUID) -> Port:
        """Delete a free port; PortNotFound, or PortInUse while it is bound."""
        ...

    async def release_ports(self, device_id: str) -> list[Port]:
        """In one transaction: delete the ports the agent made for this server and detach
        the user's (free and DOWN again); the ports as they were before."""
        ...

    # -- keypairs: per user; a name is unique per user (the store decides, also between
    # callers at the same time).
    async def add_keypair(self, keypair: Keypair) -> Keypair:
        """Insert a keypair (its id is ignored): the keypair as stored, with its id.
        KeypairExists when the user has one of that name."""
        ...

    def get_keypair(self, user_id: str, name: str) -> Keypair | None: ...

    def list_keypairs(self, user_id: str) -> list[Keypair]:
        """The user's keypairs by name."""
        ...

    async def delete_keypair(self, user_id: str, name: str) -> Keypair:
        """Delete the user's keypair of that name (KeypairNotFound); as it was."""
        ...

    def close(self) -> None: ...


class NetPlumber(Protocol):
    """Bridges and taps on this host (os-vif style). Every call is idempotent: it makes
    what is missing, repairs what differs, and leaves what is right alone."""

    def ensure_bridge(self, network: Network) -> None:
        """The bridge exists and is up with the network's MTU and gateway address, joined
        to its uplink (VLAN sub-interface or physical interface) if it has one."""
        ...

    def plug(self, port: Port, network: Network) -> None:
        """The port's tap exists, with the network's MTU, in the network's bridge, up."""
        ...

    def unplug(self, tap: str) -> None:
        """The tap is gone (a missing one is fine)."""
        ...

    def tap_exists(self, tap: str) -> bool: ...

    def bridge_members(self, bridge: str) -> set[str]:
        """Names of the interfaces in the bridge (empty when there is no such bridge)."""
        ...


class PortGuard(Protocol):
    """Anti-spoofing: frames entering a bridge from a guarded port's tap pass only from
    the port's MAC and IPv4 address (DHCP and ARP included). Idempotent, as NetPlumber."""

    def guard(self, port: Port) -> None:
        """The port's tap is bound to its MAC and IP (before or after the tap exists)."""
        ...

    def unguard(self, tap: str) -> None:
        """The tap's rules are gone (none is fine)."""
        ...


class Dhcp(Protocol):
    """One DHCP server per network, with static leases only."""

    def sync(self, network: Network, hosts: Sequence[DhcpHost]) -> None:
        """Serve exactly these leases on the network's bridge: start the server if it is
        not running, reload it when hosts changed; leases of hosts no longer listed are
        dropped."""
        ...

    def revive(self) -> list[UUID]:
        """Restart every server that was synced and has died since; their networks."""
        ...

    def stop_unknown(self, known: set[UUID]) -> list[UUID]:
        """Stop servers (and remove the files) of networks not in `known`; which."""
        ...

    def stop_all(self) -> None: ...


class WebhookReply(BaseModel):
    """What a webhook POST got: the HTTP status, or None and why there was no answer."""

    model_config = ConfigDict(frozen=True)

    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookSender(Protocol):
    """POSTs one JSON body to a webhook URL. Never raises for the receiver's failures
    (refused, timeout, 5xx): they come back in the reply."""

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> WebhookReply: ...

    async def aclose(self) -> None: ...


class SshKeys(Protocol):
    """SSH keys: new RSA keys made, and public keys read and fingerprinted. Never logs
    a private key."""

    def generate(self) -> GeneratedKey:
        """A new ssh-rsa key (2048 bits, as Nova makes them at 2.1)."""
        ...

    def fingerprint(self, public_key: str) -> str:
        """Nova's fingerprint of an OpenSSH public key line (MD5 of the key blob as
        colon-separated hex pairs); ValueError when the text is not such a key."""
        ...


class DiskInjector(Protocol):
    """Puts personality files and the root password hash into guest disks before first
    boot. One call may cover several disks (one appliance launch for all)."""

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        ...


# --- The fleet's broker (issue 12); the lead moves this when ports.py is split. ---

JobHandler = Callable[[JobMessage], Awaitable[None]]
FleetHandler = Callable[[EventMessage | Heartbeat], Awaitable[None]]


class JobBus(Protocol):
    """Jobs from the controller to one host's queue (compute.<host>), at least once."""

    async def publish_job(self, host: str, job: JobMessage) -> None:
        """Returns once the broker has confirmed the job is in the host's queue. Waits
        through lost connections (retrying; the job id makes a duplicate harmless);
        raises agent.errors.JobUnroutable when the host has no queue."""
        ...

    async def consume_jobs(self, handler: JobHandler) -> None:
        """Deliver this host's jobs to `handler`, one by one in order. A job is
        acknowledged only after the handler returns (= the agent's store holds it); a
        handler that raises gets it again later. An invalid message is dead-lettered."""
        ...


class FleetPublisher(Protocol):
    """An agent's status events (from its durable outbox, in order) and heartbeats."""

    async def publish_event(self, event: EventMessage) -> None:
        """Returns once the broker confirmed it; waits through lost connections."""
        ...

    async def publish_heartbeat(self, heartbeat: Heartbeat) -> None: ...


class FleetListener(Protocol):
    """The controller's side: every host's events and heartbeats."""

    async def consume_fleet(self, handler: FleetHandler) -> None:
        """Deliver events and heartbeats to `handler`; each is acknowledged after the
        handler returns (= committed). Invalid messages are dead-lettered."""
        ...
