"""Delete: tear the guest down (domain, disk, console files) and mark the server DELETED.
The row stays (soft delete) so that changes-since can report it."""

from __future__ import annotations

from agent.core.workflows.base import WorkflowDeps
from agent.model.domain import PowerState
from agent.model.job import Job
from agent.model.states import VmState

STEPS = ("guest removed", "deleted")


class DeleteWorkflow:
    def __init__(self, deps: WorkflowDeps) -> None:
        self.deps = deps

    async def run(self, job: Job) -> None:
        d = self.deps
        if d.current(job).vm_state is VmState.DELETED:
            return  # its last checkpoint landed before a restart: nothing left to do
        # Idempotent, so redone after a restart even past "guest removed": cheap when
        # nothing is left, and sure to catch what a killed teardown left half-done.
        await d.tear_down_guest(job.server_id)
        if job.step not in STEPS:  # never move a resumed job's checkpoint backwards
            job = await d.checkpoint(job, "guest removed")
        await d.checkpoint(job, "deleted", {
            "vm_state": VmState.DELETED, "task_state": None, "power_state": PowerState.NOSTATE,
            "deleted_at": d.now()}, cause="deleted")
