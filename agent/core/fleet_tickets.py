"""Job tickets (issue 12): what an agent fetches from the controller for a JobMessage
(GET /fleet/v1/jobs/{job_id}?host=H with X-Fleet-Token): the job with its payload, the
server as the controller holds it, and its ports (the controller's addresses).

The payload (a password hash, personality files) goes over HTTP only, to the host the
server is placed on, with the fleet's shared secret; it is never on the broker. It is kept
after a fetch: an agent killed between fetching and committing the ticket fetches it
again after the redelivery, and must find the same inputs (the controller's database is
0600, as an agent's is)."""

from __future__ import annotations

import asyncio
import hmac
from uuid import UUID

from agent.core.fleet_dispatch import FETCHED_STEP
from agent.errors import JobNotFound
from agent.model.fleet import JobTicket
from agent.model.job import JobStatus
from agent.protocols import Store


class FleetTickets:
    def __init__(self, store: Store, secret: str, step_lock: asyncio.Lock | None = None) -> None:
        if not secret:
            raise ValueError("the fleet token must not be empty")
        self.store = store
        self._secret = secret.encode()
        self._step_lock = step_lock or asyncio.Lock()  # the dispatcher's (FleetDispatcher.step_lock)

    def authorized(self, presented: str) -> bool:
        """Whether `presented` is the fleet's token, compared in constant time."""
        return hmac.compare_digest(presented.encode(errors="surrogateescape"), self._secret)

    async def fetch(self, job_id: UUID, host: str) -> JobTicket:
        """The ticket of a job whose server is placed on `host`; JobNotFound for a job the
        controller does not have, or one for another host (the same answer: a host learns
        nothing of the others' jobs).

        The ticket's job is the job to run, as the API made it (queued, no step, no try
        yet), not the controller's record of its dispatch. The first fetch records that the
        host has it (step "fetched", which the dispatcher's record keeps): until then the
        controller keeps the status it gave the server for this job against the host's
        older events (see fleet_apply)."""
        job = self.store.get_job(job_id)
        server = self.store.get_server(job.server_id) if job is not None else None
        if job is None or server is None or not server.host or server.host != host:
            raise JobNotFound(f"Job {job_id} could not be found for host {host[:200]}.")
        async with self._step_lock:  # the agent may fetch before the dispatcher's record
            current = self.store.get_job(job_id)
            if current is not None and current.step != FETCHED_STEP:
                await self.store.update_job(job.id, {"step": FETCHED_STEP})
        to_run = job.model_copy(update={"status": JobStatus.QUEUED, "step": "", "attempts": 0,
                                        "error": ""})
        return JobTicket(job=to_run, server=server,
                         ports=self.store.list_ports(device_id=str(server.id)))
