"""The one table that decides which action is legal in which state (firecracker-style).

An action is legal when the server's vm_state is one it accepts and no other task is in
flight (except delete, which may interrupt). The result names the task_state the action
sets while it runs; the workflow sets the final vm_state when it is done.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from agent.model.states import Status, TaskState, VmState, status_of


class Action(StrEnum):
    DELETE = "delete"
    UPDATE = "update"  # PUT /servers/{id}: name and access addresses, any time
    METADATA = "metadata"  # metadata changes, as Nova: settled states, no task in flight
    REBOOT_SOFT = "reboot_soft"
    REBOOT_HARD = "reboot_hard"
    STOP = "os-stop"
    START = "os-start"
    SUSPEND = "suspend"
    RESUME = "resume"
    RESCUE = "rescue"
    UNRESCUE = "unrescue"
    RESIZE = "resize"
    CONFIRM_RESIZE = "confirmResize"
    REVERT_RESIZE = "revertResize"
    REBUILD = "rebuild"
    CHANGE_PASSWORD = "changePassword"  # noqa: S105 - an action name


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True)

    from_states: frozenset[VmState]
    task: TaskState | None
    interrupts_tasks: bool = False


def _rule(states: set[VmState], task: TaskState | None, interrupts: bool = False) -> Rule:
    return Rule(from_states=frozenset(states), task=task, interrupts_tasks=interrupts)


_LIVE = {VmState.ACTIVE, VmState.STOPPED, VmState.SUSPENDED, VmState.RESCUED, VmState.RESIZED,
         VmState.ERROR, VmState.BUILDING, VmState.UNKNOWN}

RULES: dict[Action, Rule] = {
    Action.DELETE: _rule(_LIVE, TaskState.DELETING, interrupts=True),
    Action.UPDATE: _rule(_LIVE, None, interrupts=True),
    Action.METADATA: _rule({VmState.ACTIVE, VmState.STOPPED, VmState.SUSPENDED}, None),
    Action.REBOOT_SOFT: _rule({VmState.ACTIVE}, TaskState.REBOOTING),
    Action.REBOOT_HARD: _rule({VmState.ACTIVE, VmState.STOPPED, VmState.ERROR},
                              TaskState.REBOOTING_HARD),
    Action.STOP: _rule({VmState.ACTIVE, VmState.ERROR, VmState.RESCUED}, TaskState.POWERING_OFF),
    Action.START: _rule({VmState.STOPPED}, TaskState.POWERING_ON),
    Action.SUSPEND: _rule({VmState.ACTIVE}, TaskState.SUSPENDING),
    Action.RESUME: _rule({VmState.SUSPENDED}, TaskState.RESUMING),
    Action.RESCUE: _rule({VmState.ACTIVE, VmState.STOPPED, VmState.ERROR}, TaskState.RESCUING),
    Action.UNRESCUE: _rule({VmState.RESCUED}, TaskState.UNRESCUING),
    Action.RESIZE: _rule({VmState.ACTIVE, VmState.STOPPED}, TaskState.RESIZE_PREP),
    Action.CONFIRM_RESIZE: _rule({VmState.RESIZED}, TaskState.RESIZE_CONFIRMING),
    Action.REVERT_RESIZE: _rule({VmState.RESIZED}, TaskState.RESIZE_REVERTING),
    Action.REBUILD: _rule({VmState.ACTIVE, VmState.STOPPED, VmState.ERROR}, TaskState.REBUILDING),
    Action.CHANGE_PASSWORD: _rule({VmState.ACTIVE, VmState.ERROR}, TaskState.UPDATING_PASSWORD),
}


class IllegalTransition(Exception):
    """The action is not legal now. The message names the current status (-> HTTP 409)."""

    def __init__(self, action: Action, status: Status, why: str) -> None:
        self.action = action
        self.status = status
        super().__init__(f"Cannot '{action.value}' server while it is in status {status.value}{why}")


def check_action(action: Action, vm_state: VmState, task_state: TaskState | None) -> TaskState | None:
    """Return the task_state the action runs under, or raise IllegalTransition."""
    rule = RULES[action]
    status = status_of(vm_state, task_state)
    if vm_state not in rule.from_states:
        raise IllegalTransition(action, status, "")
    if task_state is not None and not rule.interrupts_tasks:
        raise IllegalTransition(action, status, f" (task {task_state.value} in progress)")
    if action is Action.DELETE and task_state is TaskState.DELETING:
        raise IllegalTransition(action, status, " (already being deleted)")
    return rule.task
