"""Declared workflows: per job kind, the task states it owns, its steps, the vm_states
its success leaves and what its failure does. The job runner (agent/core/jobs.py) reads
only this table: it skips the steps a job has already recorded, runs the next and records
it with one Store.advance (a compare-and-set on the task it owns), and the last step ends
the job in the same transaction. Beside the transition table (transitions.py), which says
which task an action starts under; this says how a job under that task ends."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from agent.model.job import JobKind
from agent.model.states import TaskState, VmState


class FailureOutcome(StrEnum):
    TEAR_DOWN = "tear down"  # create: nothing half-made stays; ERROR with a fault
    ERROR = "error"  # delete: ERROR with a fault
    SETTLE = "settle"  # an action: the status the guest really has, and a fault


class DeclaredWorkflow(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: JobKind
    tasks: frozenset[TaskState]
    steps: tuple[str, ...]
    done_states: frozenset[VmState]
    failure: FailureOutcome

    @property
    def final_step(self) -> str:
        return self.steps[-1]

    def steps_left(self, recorded: str) -> tuple[str, ...]:
        """The steps after the last one recorded (all of them when none is)."""
        if recorded in self.steps:
            return self.steps[self.steps.index(recorded) + 1:]
        return self.steps


def _decl(kind: JobKind, tasks: set[TaskState], steps: tuple[str, ...], done: set[VmState],
          failure: FailureOutcome = FailureOutcome.SETTLE) -> DeclaredWorkflow:
    return DeclaredWorkflow(kind=kind, tasks=frozenset(tasks), steps=steps,
                            done_states=frozenset(done), failure=failure)


_ONE = ("done",)  # an action that only records its end
_ACTIVE, _STOPPED = VmState.ACTIVE, VmState.STOPPED

WORKFLOWS: dict[JobKind, DeclaredWorkflow] = {d.kind: d for d in (
    # The disk and its injection are one unit for a restart (a half-injected disk is made
    # again from its base); the taps are plugged and the domain defined again until the
    # guest has started (both idempotent; taps vanish with a host reboot).
    _decl(JobKind.CREATE, {TaskState.SPAWNING}, ("injected", "domain", "started", "running"),
          {_ACTIVE, VmState.ERROR}, FailureOutcome.TEAR_DOWN),
    _decl(JobKind.DELETE, {TaskState.DELETING}, ("guest removed", "deleted"), {VmState.DELETED},
          FailureOutcome.ERROR),
    _decl(JobKind.REBOOT, {TaskState.REBOOTING, TaskState.REBOOTING_HARD}, _ONE, {_ACTIVE}),
    _decl(JobKind.STOP, {TaskState.POWERING_OFF}, _ONE, {_STOPPED}),
    _decl(JobKind.START, {TaskState.POWERING_ON}, _ONE, {_ACTIVE}),
    _decl(JobKind.SUSPEND, {TaskState.SUSPENDING}, _ONE, {VmState.SUSPENDED}),
    _decl(JobKind.RESUME, {TaskState.RESUMING}, _ONE, {_ACTIVE}),
    _decl(JobKind.RESCUE, {TaskState.RESCUING}, ("off", "disk", "done"), {VmState.RESCUED}),
    _decl(JobKind.UNRESCUE, {TaskState.UNRESCUING}, _ONE, {_ACTIVE}),
    _decl(JobKind.RESIZE, {TaskState.RESIZE_PREP}, ("off", "copied", "swapped", "done"),
          {VmState.RESIZED}),
    _decl(JobKind.CONFIRM_RESIZE, {TaskState.RESIZE_CONFIRMING}, _ONE, {_ACTIVE, _STOPPED}),
    # The record of the resize is removed in the last step, after the guest is back: a
    # restart before it reverts again from the record.
    _decl(JobKind.REVERT_RESIZE, {TaskState.RESIZE_REVERTING}, ("reverted", "done"),
          {_ACTIVE, _STOPPED}),
    _decl(JobKind.REBUILD, {TaskState.REBUILDING}, ("off", "disk", "swapped", "done"), {_ACTIVE}),
    # The online path (the guest agent) goes from the start straight to "done".
    _decl(JobKind.CHANGE_PASSWORD, {TaskState.UPDATING_PASSWORD}, ("off", "injected", "done"),
          {_ACTIVE}),
)}
