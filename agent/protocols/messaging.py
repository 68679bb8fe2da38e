"""Messages that leave the host: webhooks, and the fleet's broker (issue 12)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from agent.model.fleet import EventMessage, Heartbeat, JobMessage, JobTicket, SnapshotRequest


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



# --- The fleet's broker (issue 12) ---

JobHandler = Callable[[JobMessage | SnapshotRequest], Awaitable[None]]
FleetHandler = Callable[[EventMessage | Heartbeat], Awaitable[None]]


class JobBus(Protocol):
    """Jobs from the controller to one host's queue (compute.<host>), at least once."""

    async def publish_job(self, host: str, job: JobMessage) -> None:
        """Returns once the broker has confirmed the job is in the host's queue. Waits
        through lost connections (retrying; the job id makes a duplicate harmless);
        raises agent.errors.JobUnroutable when the host has no queue."""
        ...

    async def request_snapshot(self, request: SnapshotRequest) -> None:
        """Put a snapshot request in the host's queue (type "snapshot"), as publish_job."""
        ...

    async def consume_jobs(self, handler: JobHandler) -> None:
        """Deliver this host's jobs (and snapshot requests) to `handler`, one by one in order. A job is
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


class JobTickets(Protocol):
    """The agent's side of the job ticket (issue 12): a job's inputs, fetched from the
    controller (over HTTP, with the fleet token; never through the broker)."""

    async def fetch(self, job_id: UUID) -> JobTicket | None:
        """The ticket of this host's job; None when the controller does not have it for
        this host (404: the job is gone, or placed elsewhere). Raises
        agent.errors.ControllerUnavailable for anything else (the job is taken again later)."""
        ...

    async def aclose(self) -> None: ...
