"""Delete: tear the guest down (domain, disk, console files) and mark the server DELETED.
The row stays (soft delete) so that changes-since can report it."""

from __future__ import annotations

from collections.abc import Mapping

from agent.core.workflows.base import Outcome, Run, Step, StepWorkflow
from agent.model.domain import PowerState
from agent.model.job import JobKind
from agent.model.states import VmState
from agent.model.workflows import WORKFLOWS

STEPS = WORKFLOWS[JobKind.DELETE].steps


class DeleteWorkflow(StepWorkflow):
    def steps(self) -> Mapping[str, Step]:
        return {"guest removed": self._tear_down, "deleted": self._deleted}

    async def _tear_down(self, run: Run) -> None:
        await self.deps.tear_down_guest(run.server.id)

    async def _deleted(self, run: Run) -> Outcome:
        # Idempotent, so redone after a restart past "guest removed": cheap when nothing
        # is left, and sure to catch what a killed teardown left half-done.
        if "guest removed" not in run.done:
            await self.deps.tear_down_guest(run.server.id)
        return Outcome({"vm_state": VmState.DELETED, "task_state": None,
                        "power_state": PowerState.NOSTATE, "deleted_at": self.deps.now()},
                       cause="deleted")
