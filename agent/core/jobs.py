"""The job runner: one job per server at a time, in order, resumed after a restart.

A kick only names a server (as in kubevirt's virt-handler): the runner then reads that
server's unfinished jobs from the store and runs them one by one. The store, not the
kick, is the truth, so a lost kick or a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Protocol
from uuid import UUID

import structlog

from agent.core.metrics import Metrics
from agent.core.workflows.base import Run, Step, WorkflowDeps
from agent.errors import AgentError, JobAbandoned, TakenOver
from agent.model.job import Job, JobKind, JobStatus
from agent.model.server import Server
from agent.model.states import VmState
from agent.model.workflows import WORKFLOWS, DeclaredWorkflow, FailureOutcome

log = structlog.get_logger("agent.jobs")

# A job whose daemon died under it this many times at the same step (the step never
# advanced) is failed instead of being tried again, so a poison job cannot crash-loop.
# Only tries at the step that was running count (a step recorded starts the count again), and
# each try after a death waits RETRY_BACKOFF_S * 2**(deaths - 1) first, before it counts:
# a daemon restarted (or killed) while the job waits its turn is no evidence against it.
# So an operator's restarts closer than the last wait (16 s) can never fail a build, while
# a step that kills the daemon every time is failed after ~31 s of waits.
MAX_ATTEMPTS = 6
RETRY_BACKOFF_S = 1.0


class Workflow(Protocol):
    """A job kind's steps (named as its declaration in agent/model/workflows.py has them)
    and the server's changes when it fails."""

    def steps(self) -> Mapping[str, Step]: ...
    async def settle_failure(self, job: Job, server: Server, message: str) -> dict[str, Any]: ...


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
        'running' in the store, to be resumed after their last recorded step on the next start."""
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

    async def _run(self, job: Job) -> None:
        bound = log.bind(job_id=str(job.id), server_id=str(job.server_id), kind=job.kind.value)
        declared = WORKFLOWS[job.kind]
        if job.attempts >= MAX_ATTEMPTS:
            bound.error("job.abandoned", attempts=job.attempts, step=job.step)
            await self._fail(job, declared, JobAbandoned(
                f"{job.kind.value} abandoned after {job.attempts} attempts at step "
                f"'{job.step or 'start'}'"))
            return
        if job.attempts > 0:  # the daemon died under it at this step: wait, uncounted
            delay = self.retry_backoff_s * 2 ** (job.attempts - 1)
            bound.info("job.retry_backoff", step=job.step or "-", deaths=job.attempts,
                       delay_s=delay)
            await asyncio.sleep(delay)
        job = await self.store.start_job(job.id)
        bound.info("job.started", step=job.step or "-", attempt=job.attempts)
        try:
            await self.metrics.timed_job(job.kind, self._steps(job, declared))
        except TakenOver as e:
            bound.info("job.interrupted", reason=str(e))
            await self.store.end_job(job.id, JobStatus.CANCELLED,
                                     error="interrupted by a later request")
            return
        except asyncio.CancelledError:
            bound.info("job.paused", reason="agent stopping")
            # A clean stop is not a death under the job: give the attempt back, or a few
            # restarts during a long build would abandon it as a poison job.
            with contextlib.suppress(AgentError):
                await asyncio.shield(self.store.pause_job(job.id))
            raise
        except Exception as e:  # any failure ends in a fault, never a stuck server
            bound.error("job.failed", error=safe_message(e), exc_type=type(e).__name__)
            await self._fail(job, declared, e)
            return
        bound.info("job.succeeded")

    async def _steps(self, job: Job, declared: DeclaredWorkflow) -> None:
        """Skip the steps the job has recorded; run each one left and record it (with the
        server's changes, if its server still carries the job's task: else TakenOver).
        The final step ends the job in the same transaction."""
        left = declared.steps_left(job.step)
        if not left:  # its final step recorded, its end not (a database from before the
            await self.store.end_job(job.id, JobStatus.SUCCEEDED)  # two were one commit)
            return
        server = self.deps.current(job)
        if server.task_state not in declared.tasks:
            raise TakenOver(f"server now {server.task_state}")
        run = Run(job=job, server=server, task=server.task_state)
        steps = self.workflows[job.kind].steps()
        for step in left:
            outcome = await steps[step](run)
            final = step == declared.final_step or (outcome is not None and outcome.finish)
            name = declared.final_step if final else step
            self.deps.before_checkpoint(run.job, name)
            run.job = await self.store.advance(
                run.job, name, outcome.changes if outcome else None, run.task,
                cause=(outcome.cause if outcome else "") or name, end=final)
            run.done.append(name)
            self.deps.on_checkpoint(run.job, name)
            if final:
                return

    async def _fail(self, job: Job, declared: DeclaredWorkflow, error: BaseException) -> None:
        """The job FAILED and, if its server still carries its task, the server's failure
        outcome (as declared), in one transaction."""
        message = safe_message(error)
        server = self.deps.current(job)
        changes: dict[str, Any] | None = None
        if server.task_state in declared.tasks:
            if declared.failure is FailureOutcome.TEAR_DOWN:
                try:  # leave nothing half-made behind
                    await self.deps.tear_down_guest(job.server_id)
                except Exception as e:
                    log.error("job.cleanup_failed", server_id=str(job.server_id),
                              error=safe_message(e))
            workflow = self.workflows[job.kind]
            try:
                changes = await workflow.settle_failure(job, server, message)
            except Exception as e:
                log.error("job.settle_failed", server_id=str(job.server_id),
                          error=safe_message(e))
                changes = {"vm_state": VmState.ERROR, "task_state": None,
                           "fault": self.deps.fault(500, message)}
        await self.store.end_job(job.id, JobStatus.FAILED, error=message, server_changes=changes,
                                 expect_task_state=server.task_state,
                                 cause=f"{job.kind.value} failed")
