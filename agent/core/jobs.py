"""The job runner: one job per server at a time, in order, resumed after a restart.

A kick only names a server (as in kubevirt's virt-handler): the runner then reads that
server's unfinished jobs from the store and runs them one by one. The store, not the
kick, is the truth, so a lost kick or a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Protocol
from uuid import UUID

import structlog

from agent.core.metrics import Metrics
from agent.core.workflows import actions, create, delete
from agent.core.workflows.base import Interrupted, WorkflowDeps
from agent.errors import AgentError, JobAbandoned
from agent.model.job import Job, JobKind, JobStatus
from agent.model.server import Server
from agent.model.states import TaskState, VmState

log = structlog.get_logger("agent.jobs")

# A job whose daemon died under it this many times at the same step (the step never
# advanced) is failed instead of being tried again, so a poison job cannot crash-loop.
# Only tries at the step that was running count (a checkpoint starts the count again), and
# each try after a death waits RETRY_BACKOFF_S * 2**(deaths - 1) first, before it counts:
# a daemon restarted (or killed) while the job waits its turn is no evidence against it.
# So an operator's restarts closer than the last wait (16 s) can never fail a build, while
# a step that kills the daemon every time is failed after ~31 s of waits.
MAX_ATTEMPTS = 6
RETRY_BACKOFF_S = 1.0

# The task(s) a job's server carries while the job works on it, the last checkpoint of
# each kind, and the vm_states its success may leave.
OWN_TASK: dict[JobKind, frozenset[TaskState]] = {
    JobKind.CREATE: frozenset({TaskState.SPAWNING}), JobKind.DELETE: frozenset({TaskState.DELETING}),
    **actions.OWN_TASKS}
FINAL_STEP = {JobKind.CREATE: create.STEPS[-1], JobKind.DELETE: delete.STEPS[-1], **actions.FINAL_STEPS}
DONE_STATE: dict[JobKind, frozenset[VmState]] = {
    JobKind.CREATE: frozenset({VmState.ACTIVE}), JobKind.DELETE: frozenset({VmState.DELETED}),
    **actions.DONE_STATES}


class Workflow(Protocol):
    async def run(self, job: Job) -> None: ...


def safe_message(error: BaseException) -> str:
    """A message fit for a fault: our own errors and timeouts say what happened; anything
    else only names its type (its text could carry internals)."""
    if isinstance(error, AgentError | TimeoutError):
        return str(error)
    return f"internal error ({type(error).__name__})"


class JobRunner:
    def __init__(self, deps: WorkflowDeps, workflows: Mapping[JobKind, Workflow],
                 metrics: Metrics | None = None, retry_backoff_s: float = RETRY_BACKOFF_S) -> None:
        self.deps = deps
        self.retry_backoff_s = retry_backoff_s
        self.metrics = metrics or Metrics()
        self.store = deps.store
        self.workflows = workflows
        self._active: dict[UUID, asyncio.Task[None]] = {}
        self._closing = False

    @property
    def busy(self) -> int:
        return len(self._active)

    def kick(self, server_id: UUID) -> None:
        """Make sure the server's unfinished jobs are being worked on. Loop thread only."""
        if self._closing or server_id in self._active:
            return  # a running drain re-reads the store after each job
        task = asyncio.get_running_loop().create_task(self._drain(server_id))
        self._active[server_id] = task

    def resume_all(self) -> int:
        """Kick every server that has unfinished jobs (at start-up); how many."""
        ids = {job.server_id for job in self.store.unfinished_jobs()}
        for server_id in ids:
            self.kick(server_id)
        return len(ids)

    async def idle(self) -> None:
        """Wait until no job is running (tests and the demo use it)."""
        while self._active:
            await asyncio.gather(*self._active.values(), return_exceptions=True)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; running ones are cancelled at their next await and stay
        'running' in the store, to be resumed from their checkpoint on the next start."""
        self._closing = True
        tasks = list(self._active.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _drain(self, server_id: UUID) -> None:
        try:
            while not self._closing:
                jobs = [j for j in self.store.unfinished_jobs() if j.server_id == server_id]
                if not jobs:
                    return
                await self._run(jobs[0])
        finally:
            self._active.pop(server_id, None)

    @staticmethod
    def ended_before_restart(job: Job, server: Server) -> tuple[JobStatus, str] | None:
        """How a job ended whose last server change was committed but the job's own end
        was not (the daemon died between the two transactions: after a final checkpoint,
        or in _fail); None while it still has work to do. A resumed job must not run
        again then: a create would count its own ACTIVE as a takeover and be cancelled,
        a delete would stamp a new deleted_at."""
        if server.task_state is not None:
            return None  # its own task still in flight, or a later job's: the workflow decides
        if server.vm_state in DONE_STATE[job.kind] or job.step == FINAL_STEP[job.kind]:
            return JobStatus.SUCCEEDED, ""
        if server.vm_state is VmState.ERROR:
            return JobStatus.FAILED, server.fault.message if server.fault else "failed"
        return None

    async def _run(self, job: Job) -> None:
        bound = log.bind(job_id=str(job.id), server_id=str(job.server_id), kind=job.kind.value)
        ended = self.ended_before_restart(job, self.deps.current(job))
        if ended is not None:
            status, error = ended
            bound.info("job.ended_before_restart", status=status.value, step=job.step or "-")
            await self.store.update_job(job.id, {"status": status, "error": error, "payload": {}})
            return
        if job.attempts >= MAX_ATTEMPTS:
            bound.error("job.abandoned", attempts=job.attempts, step=job.step)
            await self._fail(job, JobAbandoned(
                f"{job.kind.value} abandoned after {job.attempts} attempts at step "
                f"'{job.step or 'start'}'"))
            return
        if job.attempts > 0:  # the daemon died under it at this step: wait, uncounted
            delay = self.retry_backoff_s * 2 ** (job.attempts - 1)
            bound.info("job.retry_backoff", step=job.step or "-", deaths=job.attempts,
                       delay_s=delay)
            await asyncio.sleep(delay)
        job = await self.store.update_job(job.id, {"status": JobStatus.RUNNING,
                                             "attempts": job.attempts + 1})
        bound.info("job.started", step=job.step or "-", attempt=job.attempts)
        try:
            await self.metrics.timed_job(job.kind, self.workflows[job.kind].run(job))
        except Interrupted as e:
            bound.info("job.interrupted", reason=str(e))
            await self.store.update_job(job.id, {"status": JobStatus.CANCELLED,
                                           "error": "interrupted by a later request",
                                           "payload": {}})
            return
        except asyncio.CancelledError:
            bound.info("job.paused", reason="agent stopping")
            # A clean stop is not a death under the job: give the attempt back, or a few
            # restarts during a long build would abandon it as a poison job. (Read again:
            # a checkpoint since the start counted this try afresh at its new step.)
            with contextlib.suppress(AgentError):
                now = self.store.get_job(job.id)
                if now is not None:
                    await self.store.update_job(job.id, {"attempts": max(0, now.attempts - 1)})
            raise
        except Exception as e:  # any failure ends in a fault, never a stuck server
            bound.error("job.failed", error=safe_message(e), exc_type=type(e).__name__)
            await self._fail(job, e)
            return
        await self.store.update_job(job.id, {"status": JobStatus.SUCCEEDED, "payload": {}})
        bound.info("job.succeeded")

    async def _fail(self, job: Job, error: BaseException) -> None:
        message = safe_message(error)
        server = self.deps.current(job)
        if server.task_state in OWN_TASK[job.kind]:
            if job.kind is JobKind.CREATE:
                try:  # leave nothing half-made behind
                    await self.deps.tear_down_guest(job.server_id)
                except Exception as e:
                    log.error("job.cleanup_failed", server_id=str(job.server_id),
                              error=safe_message(e))
            changes = {"vm_state": VmState.ERROR, "task_state": None,
                       "fault": self.deps.fault(500, message)}
            settle = getattr(self.workflows.get(job.kind), "settle_failure", None)
            if settle is not None:  # an action: the status the guest really has, and a fault
                try:
                    changes = await settle(job, server, message)
                except Exception as e:
                    log.error("job.settle_failed", server_id=str(job.server_id),
                              error=safe_message(e))
            await self.store.update_server(job.server_id, changes, cause=f"{job.kind.value} failed")
        await self.store.update_job(job.id, {"status": JobStatus.FAILED, "error": message,
                                       "payload": {}})
