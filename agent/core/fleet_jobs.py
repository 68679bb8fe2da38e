"""The agent's job intake in fleet mode (issue 12): what it does with each message of its
job queue (compute.<host>) before the bus acknowledges it.

A JobMessage names a job the controller made; the job id is the idempotency key: a job
already in this agent's store is acknowledged and nothing else happens (a redelivery
never runs twice, never makes a second domain). Otherwise the job's ticket is fetched
from the controller and adopted into the store in one transaction, then the JobRunner is
kicked; the bus acks once this returns, so the job is durable here before the broker
forgets it. An unreachable controller raises: the bus gives the job back and it comes
again later, as does a job for a server not here yet (its create went back to the queue
behind it). A job the controller no longer has (404) is acknowledged and dropped.

A SnapshotRequest (the controller saw a gap in this host's events) appends one event per
server to the outbox; the relay sends them, each with the server's current state.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import structlog

from agent.errors import ServerNotFound
from agent.model.fleet import JobMessage, JobTicket, SnapshotRequest
from agent.model.job import JobStatus
from agent.protocols import JobTickets, Store

log = structlog.get_logger("agent.fleet")

SNAPSHOT_CAUSE = "snapshot"


def fresh_job(ticket: JobTicket) -> JobTicket:
    """The ticket with its job as this host starts it: queued, no step, no try yet (the
    controller's copy may read "dispatched")."""
    job = ticket.job.model_copy(update={"status": JobStatus.QUEUED, "step": "", "attempts": 0,
                                        "error": ""})
    return ticket.model_copy(update={"job": job})


class FleetJobIntake:
    """The handler AmqpBus.consume_jobs calls for each message of this host's queue."""

    def __init__(self, store: Store, tickets: JobTickets, kick: Callable[[UUID], None],
                 host: str) -> None:
        self._store = store
        self._tickets = tickets
        self._kick = kick
        self._host = host

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
        ticket = await self._tickets.fetch(message.job_id)  # ControllerUnavailable: again later
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

    async def _snapshot(self, request: SnapshotRequest) -> None:
        if request.host != self._host:
            log.error("fleet.snapshot_for_another_host", host=request.host)
            return
        count = await self._store.append_snapshot_events(request.after_seq, SNAPSHOT_CAUSE)
        log.info("fleet.snapshot_appended", after_seq=request.after_seq, servers=count)
