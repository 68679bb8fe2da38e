"""The controller's jobs to the fleet's hosts (issue 12): what a JobRunner is to one agent,
the FleetDispatcher is to the controller. A kick only wakes it; the store is the truth.

Each pass takes every server's oldest unfinished job (a server's jobs go out in order;
different servers' go out together):
- a create is placed first (Placer.place; under a lock with the server's host committed,
  so that a burst of creates sees each other's placements): NoValidHost ends it with the
  server in ERROR, Nova's fault (code 500) and its ports released; the host is recorded
  on the server (Server.host) before anything is published;
- then the job is published to the host's queue (JobMessage: the job's id, never its
  payload, which the agent fetches over HTTP: the ticket route), and once the broker
  confirmed, the controller's job ends: SUCCEEDED, step "dispatched", payload kept;
- a delete of a server never placed (no host) is done here, as the agent's delete would:
  its ports released, the server DELETED;
- a create whose server a delete took over before it was placed is cancelled unplaced.

A controller killed at any point re-dispatches on its next start what the store still
holds unfinished: the job id is the agent's idempotency key, so a job published twice
takes effect once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol
from uuid import UUID

import structlog

from agent.core.flavors import FlavorCatalog
from agent.errors import JobUnroutable, NoValidHost, StaleServer
from agent.model.domain import PowerState
from agent.model.flavor import Flavor
from agent.model.fleet import JobMessage
from agent.model.job import Job, JobKind, JobStatus
from agent.model.server import Fault, Server
from agent.model.states import TaskState, VmState
from agent.protocols import JobBus, ServerExpectation, Store

log = structlog.get_logger("agent.fleet")

DISPATCHED_STEP = "dispatched"  # in the host's queue (the broker confirmed)
FETCHED_STEP = "fetched"  # and its ticket fetched by the host's agent (fleet_tickets)
RETRY_S = 5.0  # a job that could not go out (no queue for its host yet, an error): again after this
MAX_CONCURRENT_PUBLISHES = 16
SPAWNING = ServerExpectation(vm_state=VmState.BUILDING, task_state=TaskState.SPAWNING)


def ticket_path(job_id: UUID) -> str:
    """Where an agent fetches a job's ticket from the controller (the payload_ref)."""
    return f"/fleet/v1/jobs/{job_id}"


class Placer(Protocol):
    """Chooses the host of a new server (agent/core/placement.py's, the scheduler)."""

    def place(self, server: Server, flavor: Flavor) -> str:
        """The host's name; agent.errors.NoValidHost when none fits."""
        ...


class _Outcome(Enum):
    DONE = "done"  # the job ended (dispatched, failed, cancelled, done here)
    LATER = "later"  # left queued: retried after RETRY_S


class FleetDispatcher:
    def __init__(self, store: Store, bus: JobBus, placer: Placer, flavors: FlavorCatalog, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 retry_s: float = RETRY_S,
                 max_concurrent: int = MAX_CONCURRENT_PUBLISHES) -> None:
        self.store = store
        self.bus = bus
        self.placer = placer
        self.flavors = flavors
        self.now = now
        self.retry_s = retry_s
        self._wake = asyncio.Event()
        self._placing = asyncio.Lock()
        # Held across a read of a job's step and its committed write, here and by the ticket
        # fetch (FleetTickets shares it): a fetch's "fetched" still on its way to the store
        # must not be overwritten by the confirm's "dispatched" read before it landed.
        self.step_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._seq = 0  # jobs this process published (JobMessage.seq: bookkeeping and logs)

    def kick(self, server_id: UUID | None = None) -> None:
        """A job was committed (ServerService's kick): look at the store again."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: dispatch what is unfinished (at once: a restart resumes), then
        wait for a kick (or the retry time while some job is left waiting)."""
        while True:
            self._wake.clear()
            waiting = await self.dispatch_pending()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.retry_s if waiting else None)

    async def dispatch_pending(self) -> bool:
        """Passes until nothing more can go out now; True when some job is left waiting."""
        while True:
            firsts: dict[UUID, Job] = {}
            for job in self.store.unfinished_jobs():  # oldest first
                firsts.setdefault(job.server_id, job)
            if not firsts:
                return False
            outcomes = await asyncio.gather(*(self._bounded(j) for j in firsts.values()))
            if _Outcome.DONE not in outcomes:
                return True
            # Some ended: those servers' next jobs (if any) go out in the next pass.

    async def _bounded(self, job: Job) -> _Outcome:
        async with self._slots:
            try:
                return await self.dispatch(job)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never the end of the loop: the job stays, tried again
                log.error("fleet.dispatch_failed", job_id=str(job.id), kind=job.kind.value,
                          error=type(e).__name__, detail=str(e)[:200])
                return _Outcome.LATER

    async def dispatch(self, job: Job) -> _Outcome:
        server = self.store.get_server(job.server_id)
        if server is None:  # cannot happen (a job's server is never removed): say so, end it
            await self.store.end_job(job.id, JobStatus.FAILED, error="server not found")
            return _Outcome.DONE
        if job.kind is JobKind.CREATE and not server.host:
            if (server.vm_state, server.task_state) != (SPAWNING.vm_state, SPAWNING.task_state):
                await self.store.end_job(job.id, JobStatus.CANCELLED,
                                         error="interrupted by a later request")
                return _Outcome.DONE
            placed = await self._place(job, server)
            if placed is None:
                return _Outcome.DONE
            server = placed
        if not server.host:
            return await self._done_here(job, server)
        return await self._publish(job, server)

    async def _place(self, job: Job, server: Server) -> Server | None:
        """The server with its host recorded; None when its create ended here instead."""
        async with self._placing:  # place and commit together: the next sees this one
            try:
                host = self.placer.place(server, self.flavors.get(server.flavor_id))
            except NoValidHost as e:
                await self._no_valid_host(job, server, str(e))
                return None
            try:
                placed = await self.store.update_server(server.id, {"host": host},
                                                        cause="placed", expect=SPAWNING)
            except StaleServer:  # a delete came meanwhile: the next pass cancels the create
                return None
        log.info("fleet.placed", server_id=str(server.id), host=host)
        return placed

    async def _no_valid_host(self, job: Job, server: Server, message: str) -> None:
        log.warning("fleet.no_valid_host", server_id=str(server.id), reason=message)
        fault = Fault(code=500, message=message, created=self.now())
        await self.store.end_job(job.id, JobStatus.FAILED, error=message, server_changes={
            "vm_state": VmState.ERROR, "task_state": None, "fault": fault},
            expect_task_state=TaskState.SPAWNING, cause="create failed")
        # After the ERROR is committed: a crash in between leaves the ports bound to an
        # ERROR server, released by its delete (done here: it has no host).
        await self.store.release_ports(str(server.id))

    async def _done_here(self, job: Job, server: Server) -> _Outcome:
        """A job for a server no host has: a delete is done here; anything else fails."""
        if job.kind is JobKind.DELETE:
            await self.store.release_ports(str(server.id))  # idempotent: first, then the end
            changes: dict[str, Any] = {"vm_state": VmState.DELETED, "task_state": None,
                                       "power_state": PowerState.NOSTATE,
                                       "deleted_at": self.now()}
            await self.store.end_job(job.id, JobStatus.SUCCEEDED, server_changes=changes,
                                     expect_task_state=TaskState.DELETING, cause="deleted")
            log.info("fleet.deleted_unplaced", server_id=str(server.id))
            return _Outcome.DONE
        await self.store.end_job(job.id, JobStatus.FAILED, error="the server is on no host",
                                 server_changes={"task_state": None},
                                 expect_task_state=server.task_state, cause=f"{job.kind.value} failed")
        return _Outcome.DONE

    async def _publish(self, job: Job, server: Server) -> _Outcome:
        self._seq += 1
        message = JobMessage(job_id=job.id, server_id=server.id, kind=job.kind,
                             payload_ref=ticket_path(job.id), seq=self._seq)
        try:
            await self.bus.publish_job(server.host, message)
        except JobUnroutable as e:  # the host's agent never declared its queue
            log.warning("fleet.job_unroutable", job_id=str(job.id), host=server.host, error=str(e))
            return _Outcome.LATER
        # Confirmed: in the host's queue. The payload stays for the agent's ticket fetch.
        # Its agent may have fetched the ticket already (step "fetched"): kept.
        async with self.step_lock:
            current = self.store.get_job(job.id)
            fetched = current is not None and current.step == FETCHED_STEP
            await self.store.update_job(job.id, {
                "status": JobStatus.SUCCEEDED, "step": FETCHED_STEP if fetched else DISPATCHED_STEP})
        log.info("fleet.dispatched", job_id=str(job.id), kind=job.kind.value,
                 server_id=str(server.id), host=server.host, seq=self._seq)
        return _Outcome.DONE
