"""What agents and the controller say to each other through the broker (issue 12).

Every message is JSON with a version ("v": 1) and refuses unknown fields, so a sender
from a newer release is noticed (dead-lettered and logged) instead of half understood.
Job payloads are never on the wire: a job names where its inputs are (`payload_ref`),
because inputs may hold secrets (a password hash, personality files).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from agent.model.domain import PowerState
from agent.model.host import VirtType
from agent.model.job import Job, JobKind
from agent.model.network import Port
from agent.model.server import Fault, Server
from agent.model.states import Status, TaskState, VmState

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # a job, an event and a heartbeat are each far smaller

# A host name is part of queue names and routing keys (compute.<host>, event.<host>):
# no AMQP topic wildcards (* #), no spaces; dots are fine (FQDNs).
HostName = Annotated[str, Field(min_length=1, max_length=200,
                                pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")]
Count = Annotated[int, Field(ge=0, le=2**53)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = WIRE_VERSION


class JobMessage(_Wire):
    """A job for one host. `job_id` is the idempotency key: a redelivered job with an id
    the agent's store already holds is acknowledged and not run again."""

    job_id: UUID
    server_id: UUID
    kind: JobKind
    # Where the agent fetches the job's inputs (the controller's store); never the inputs.
    payload_ref: str = Field(default="", max_length=1024)
    # The controller's sequence of jobs it published (for its own bookkeeping and logs).
    seq: Count


class ServerSnapshot(_Wire):
    """What the agent owns of a server, as its store holds it when the event is sent: the
    controller copies these fields onto its own row (the API's fields stay the controller's).
    Each event carries the whole of it, so applying the newest one is enough to be right."""

    vm_state: VmState
    task_state: TaskState | None
    power_state: PowerState
    progress: int = Field(ge=0, le=100)
    fault: Fault | None = None
    launched_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None
    updated_at: AwareDatetime


class EventMessage(_Wire):
    """A status change of one server on one host, numbered per host from 1 without gaps,
    in the order the agent's outbox recorded it, with the server's state as it is now
    (None: the agent no longer has the server's row at all)."""

    host: HostName
    seq: Annotated[int, Field(ge=1, le=2**53)]
    server_id: UUID
    status: Status
    power_state: PowerState
    at: AwareDatetime
    server: ServerSnapshot | None = None


class SnapshotRequest(_Wire):
    """The controller saw a gap in a host's events: the host appends an event for each of
    its servers (cause "snapshot") to its outbox, so the controller gets every server's
    current state in order after the gap. Sent on the host's job queue (AMQP type
    "snapshot"; jobs are type "job")."""

    host: HostName
    after_seq: Count  # the gap was seen after this one


class JobTicket(BaseModel):
    """What an agent fetches for a JobMessage from the controller (GET
    /fleet/v1/jobs/{job_id}?host=H, header X-Fleet-Token): the job with its payload, the
    server as the controller holds it, and its ports (the controller's addresses). Over
    HTTP, never through the broker: the payload may hold secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: Job
    server: Server
    ports: list[Port] = Field(default_factory=list, max_length=64)


class Heartbeat(_Wire):
    """A host says it is alive, and what it has. Sent every heartbeat interval; a host
    whose last one is older than three intervals is `down`."""

    host: HostName
    vcpus: Count
    ram_mb: Count
    disk_total_gb: Count
    disk_used_gb: Count
    running_servers: Count
    virt_type: VirtType
    images: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(max_length=10000)
    sent_at: AwareDatetime
    interval_s: float = Field(gt=0, le=3600)


class InvalidMessage(ValueError):
    """A message body that is not a valid message of the expected kind. Its text names
    the reason and the offending fields, never their content."""


Wire = TypeVar("Wire", bound=_Wire)


def encode(message: _Wire) -> bytes:
    return message.model_dump_json().encode()


def decode(kind: type[Wire], body: bytes) -> Wire:
    """The message in `body`, or InvalidMessage (too big, not JSON, wrong or missing
    version, unknown or invalid fields)."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"{len(body)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage("not JSON") from None
    if not isinstance(data, dict):
        raise InvalidMessage("not a JSON object")
    if data.get("v") != WIRE_VERSION:
        raise InvalidMessage(f"missing or unsupported version (this side speaks v{WIRE_VERSION})")
    try:
        return kind.model_validate(data)
    except ValidationError as e:
        # Field names only (an unknown one is the sender's text: a few, each cut short).
        fields = sorted({".".join(str(p) for p in err["loc"])[:64] or "(message)"
                         for err in e.errors()})
        more = f" and {len(fields) - 8} more" if len(fields) > 8 else ""
        raise InvalidMessage(f"invalid {kind.__name__}: {', '.join(fields[:8])}{more}") from None


# --- Rules the controller applies to what it receives (pure; its store keeps the state) ---

class EventVerdict(StrEnum):
    APPLY = "apply"  # the next one: apply, then ack after the commit
    DUPLICATE = "duplicate"  # seen already (a redelivery or a resend): ack, change nothing
    GAP = "gap"  # some are missing: ask the host for a snapshot, then go on from it


def event_verdict(last_applied: int | None, seq: int) -> EventVerdict:
    """What to do with a host's event `seq` when `last_applied` is the last one applied
    (None: nothing known of this host yet, so anything but its very first event is a gap)."""
    last = last_applied or 0
    if seq <= last:
        return EventVerdict.DUPLICATE
    return EventVerdict.APPLY if seq == last + 1 else EventVerdict.GAP


MISSED_HEARTBEATS_DOWN = 3


def host_is_down(last_heartbeat_at: datetime | None, interval_s: float, now: datetime) -> bool:
    """A host is down once MISSED_HEARTBEATS_DOWN of its intervals passed without one (and
    before its first)."""
    if last_heartbeat_at is None:
        return True
    return (now - last_heartbeat_at).total_seconds() > MISSED_HEARTBEATS_DOWN * interval_s


# --- What the controller keeps of each host (its store; the scheduler and /os-services,
# /os-hypervisors read it) ---

class HostRecord(BaseModel):
    """A hypervisor host as the controller knows it: made by its first heartbeat."""

    model_config = ConfigDict(frozen=True)

    name: HostName
    enabled: bool = True  # disabled through /os-services: no new placement on it
    disabled_reason: str | None = None
    heartbeat: Heartbeat | None = None  # the last one received
    heartbeat_at: datetime | None = None  # when the controller received it (its own clock)
    last_event_seq: int = 0  # the last of this host's events applied (0: none yet)

    def is_down(self, now: datetime) -> bool:
        if self.heartbeat is None:
            return True
        return host_is_down(self.heartbeat_at, self.heartbeat.interval_s, now)
