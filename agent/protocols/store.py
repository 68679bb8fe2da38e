"""The store: servers, their jobs and status events, ports and keypairs, durable.

The rules every Store keeps (SQLite and the in-memory twin alike) are written once here:
change keys, expectations (compare-and-set), a job's advance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from agent.errors import StaleServer, TakenOver
from agent.model.fleet import Heartbeat, HostRecord, JobTicket
from agent.model.job import Job, JobStatus, StatusEvent
from agent.model.keypair import Keypair
from agent.model.network import Port
from agent.model.scheduling import ServerGroup
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


# Fleet mode (issue 12): what of a server the agent owns (it reports them back in each
# event's ServerSnapshot), and what the controller owns (adopted from its job tickets).
AGENT_OWNED_SERVER_FIELDS = frozenset({"vm_state", "power_state", "progress", "fault",
                                       "launched_at", "deleted_at"})
_NEVER_ADOPTED = AGENT_OWNED_SERVER_FIELDS | {"id", "project_id", "created_at", "updated_at",
                                              "reservation_id"}


def adopted_server_changes(current: Server, controller: Server) -> dict[str, Any]:
    """The controller's fields of a server (its task for the job, name, metadata, ...) that
    differ from the agent's row: what a non-create job's ticket changes."""
    return {name: getattr(controller, name) for name in Server.model_fields
            if name not in _NEVER_ADOPTED and getattr(controller, name) != getattr(current, name)}


def check_ticket(ticket: JobTicket) -> None:
    """ValueError unless the ticket's job, server and ports belong together."""
    check_new_server(NewServer(ticket.server, ticket.job))
    for port in ticket.ports:
        if port.device_id != str(ticket.server.id):
            raise ValueError(f"port {port.id} is not bound to server {ticket.server.id}")


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

    def flavor_counts(self, project_id: str, *, without: UUID | None = None) -> dict[str, int]:
        """The project's servers not deleted (but `without`), counted by flavor id: what
        its quota usage is made of, without reading every server."""
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

    def jobs_of(self, server_id: UUID) -> list[Job]:
        """Every job of the server, ended ones included, oldest first."""
        ...

    def events_since(self, seq: int, project_id: str | None = None,
                     limit: int = 1000) -> list[StatusEvent]: ...

    def set_event_listener(self, listener: Callable[[], None] | None) -> None:
        """Call `listener` after each commit that appended events (from the committing
        thread, so it must only schedule work, e.g. wake the event feed)."""
        ...

    # -- fleet mode (issue 12): jobs come from the controller -----------------------------
    async def adopt_job(self, ticket: JobTicket) -> bool:
        """Take in the controller's job, in one transaction; False (nothing written) when
        a job of that id is held already (a redelivery). A create inserts the server, its
        job, its ports (each as given: the controller allocated and bound them) and the
        first event, as create_server does; another kind inserts the job and applies the
        ticket's server fields the controller owns (adopted_server_changes), with their
        event. ServerNotFound when a non-create's server is not here."""
        ...

    async def append_snapshot_events(self, after_seq: int, cause: str = "snapshot") -> int:
        """One event per server not deleted, and per server with an event after
        `after_seq` (so a delete after it is said too), each with its current status as
        both old and new status, in one transaction; how many were appended."""
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

    # -- server groups (Nova's /os-server-groups). A group's members are the servers, not
    # deleted, whose scheduler_hints["group"] is its id (str of the UUID): recorded by the
    # server's own create, gone with its delete; read with the group, oldest first.
    async def add_server_group(self, group: ServerGroup) -> ServerGroup:
        """Insert a group (its members are ignored); the group as stored."""
        ...

    def get_server_group(self, group_id: UUID) -> ServerGroup | None: ...

    def list_server_groups(self, project_id: str | None = None) -> list[ServerGroup]:
        """The project's groups (None: every project's), oldest first."""
        ...

    async def delete_server_group(self, group_id: UUID) -> ServerGroup:
        """Delete the group (ServerGroupNotFound); as it was. Its members' hints stay."""
        ...

    def close(self) -> None: ...


class HostRegistry(Protocol):
    """The controller's record of the fleet's hosts (issue 12), in its store. Each write is
    one transaction."""

    def list_hosts(self) -> list[HostRecord]:
        """Every host ever heard of, by name."""
        ...

    def get_host(self, name: str) -> HostRecord | None: ...

    async def record_heartbeat(self, heartbeat: Heartbeat, received_at: datetime) -> HostRecord:
        """Keep the host's last heartbeat (the host is made by its first one)."""
        ...

    async def set_host_enabled(self, name: str, enabled: bool,
                               reason: str | None = None) -> HostRecord:
        """Enable or disable a host (/os-services); HostNotFound if never heard of."""
        ...

    async def apply_host_event(self, host: str, seq: int, server_id: UUID,
                               changes: dict[str, Any] | None, *, cause: str,
                               release_ports: bool = False) -> Server | None:
        """One of a host's events, in one transaction: the host's last_event_seq becomes
        `seq` (the host is made if unknown), `changes` (Server fields) are applied to the
        server if the store has it and it is placed on that host (else skipped), with their
        status event; with `release_ports`, the server's ports are released as
        release_ports does. The server as it is then (None if not applied)."""
        ...
