"""The agent's job intake in fleet mode (issue 12): what it does with each message of its
job queue (compute.<host>) before the bus acknowledges it.

A JobMessage names a job the controller made; the job id is the idempotency key: a job
already in this agent's store is acknowledged and nothing else happens (a redelivery
never runs twice, never makes a second domain). Otherwise the job's ticket is fetched
from the controller and adopted into the store in one transaction, then the JobRunner is
kicked; the bus acks once this returns, so the job is durable here before the broker
forgets it. An unreachable controller is asked again with backoff for a while (the job
held), then the job goes back to the bus and comes again later, as does a job for a
server not here yet (its create went back to the queue behind it). A job the controller
no longer has (404) is acknowledged and dropped.

A SnapshotRequest (the controller saw a gap in this host's events) appends one event per
server to the outbox; the relay sends them, each with the server's current state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import UUID

import structlog

from agent.errors import ControllerUnavailable, ServerNotFound
from agent.model.fleet import JobMessage, JobTicket, SnapshotRequest
from agent.model.job import JobStatus
from agent.protocols import JobTickets, Store

log = structlog.get_logger("agent.fleet")

SNAPSHOT_CAUSE = "snapshot"
# An unavailable controller (restarting, say) is asked again with backoff while the job is
# held, for this long, before the job goes back to the broker: each return counts towards
# the queue's delivery limit (then dead letters), so returning at once would lose the job
# after a controller away for ~20 s; this way only after ~20 patience windows.
TICKET_PATIENCE_S = 300.0
TICKET_RETRY_S = (0.5, 30.0)  # first pause, cap


def fresh_job(ticket: JobTicket) -> JobTicket:
    """The ticket with its job as this host starts it: queued, no step, no try yet (the
    controller's copy may read "dispatched")."""
    job = ticket.job.model_copy(update={"status": JobStatus.QUEUED, "step": "", "attempts": 0,
                                        "error": ""})
    return ticket.model_copy(update={"job": job})


class FleetJobIntake:
    """The handler AmqpBus.consume_jobs calls for each message of this host's queue."""

    def __init__(self, store: Store, tickets: JobTickets, kick: Callable[[UUID], None],
                 host: str, *, patience_s: float = TICKET_PATIENCE_S,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] | None = None) -> None:
        self._store = store
        self._tickets = tickets
        self._kick = kick
        self._host = host
        self._patience_s = patience_s
        self._sleep = sleep
        self._clock = clock

    async def __call__(self, message: JobMessage | SnapshotRequest) -> None:
        if isinstance(message, SnapshotRequest):
            await self._snapshot(message)
        else:
            await self._take(message)

    async def _take(self, message: JobMessage) -> None:
        ids = {"job_id": str(message.job_id), "server_id": str(message.server_id),
               "kind": message.kind.value, "seq": message.seq}
        if self._store.get_job(message.job_id) is not None:
            log.info("fleet.job_duplicate_acked", **ids)
            return
        ticket = await self._fetch(message.job_id, ids)  # ControllerUnavailable: again later
        if ticket is None:
            log.warning("fleet.job_gone", reason="the controller has no such job for this host", **ids)
            return
        if (ticket.job.id, ticket.job.server_id, ticket.job.kind) != (
                message.job_id, message.server_id, message.kind):
            log.error("fleet.ticket_mismatch", reason="the ticket is for another job", **ids)
            return
        try:
            adopted = await self._store.adopt_job(fresh_job(ticket))
        except ServerNotFound:
            # Its create may still be coming: a create the controller could not answer for
            # goes back to the queue, behind jobs already delivered. Taken again later (a
            # server that never comes: dead-lettered after the queue's delivery limit).
            log.warning("fleet.job_before_its_server", **ids)
            raise
        if adopted:
            log.info("fleet.job_adopted", **ids)
            self._kick(message.server_id)
        else:  # a redelivery raced this one, which adopted it first
            log.info("fleet.job_duplicate_acked", **ids)

    async def _fetch(self, job_id: UUID, ids: dict[str, object]) -> JobTicket | None:
        """The ticket, asking again with backoff while the controller is unavailable, up
        to the patience window; then ControllerUnavailable (the bus gives the job back)."""
        clock = self._clock or asyncio.get_running_loop().time
        give_up = clock() + self._patience_s
        pause = TICKET_RETRY_S[0]
        while True:
            try:
                return await self._tickets.fetch(job_id)
            except ControllerUnavailable as e:
                if clock() + pause > give_up:
                    raise
                log.warning("fleet.ticket_unavailable", error=str(e), retry_in_s=pause, **ids)
            await self._sleep(pause)
            pause = min(pause * 2, TICKET_RETRY_S[1])

    async def _snapshot(self, request: SnapshotRequest) -> None:
        if request.host != self._host:
            log.error("fleet.snapshot_for_another_host", host=request.host)
            return
        count = await self._store.append_snapshot_events(request.after_seq, SNAPSHOT_CAUSE)
        log.info("fleet.snapshot_appended", after_seq=request.after_seq, servers=count)
