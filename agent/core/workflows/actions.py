"""The action workflows by job kind (their steps are declared in agent/model/workflows.py)."""

from __future__ import annotations

from agent.core.injection import InjectionBatcher
from agent.core.workflows.base import WorkflowDeps
from agent.core.workflows.guest_ops import ActionTimings, ActionWorkflow, GuestOps
from agent.core.workflows.power_actions import (
    RebootWorkflow,
    ResumeWorkflow,
    StartWorkflow,
    StopWorkflow,
    SuspendWorkflow,
)
from agent.core.workflows.rebuild import ChangePasswordWorkflow, RebuildWorkflow
from agent.core.workflows.rescue import RescueWorkflow, UnrescueWorkflow
from agent.core.workflows.resize import (
    ConfirmResizeWorkflow,
    ResizeWorkflow,
    RevertResizeWorkflow,
)
from agent.model.job import JobKind

WORKFLOW_CLASSES: dict[JobKind, type[ActionWorkflow]] = {
    JobKind.REBOOT: RebootWorkflow,
    JobKind.STOP: StopWorkflow,
    JobKind.START: StartWorkflow,
    JobKind.SUSPEND: SuspendWorkflow,
    JobKind.RESUME: ResumeWorkflow,
    JobKind.RESCUE: RescueWorkflow,
    JobKind.UNRESCUE: UnrescueWorkflow,
    JobKind.RESIZE: ResizeWorkflow,
    JobKind.CONFIRM_RESIZE: ConfirmResizeWorkflow,
    JobKind.REVERT_RESIZE: RevertResizeWorkflow,
    JobKind.REBUILD: RebuildWorkflow,
    JobKind.CHANGE_PASSWORD: ChangePasswordWorkflow,
}
_INJECTING = {JobKind.RESCUE, JobKind.REBUILD, JobKind.CHANGE_PASSWORD}

def action_workflows(deps: WorkflowDeps, injector: InjectionBatcher,
                     timings: ActionTimings | None = None) -> dict[JobKind, ActionWorkflow]:
    ops = GuestOps(deps, timings or ActionTimings())
    out: dict[JobKind, ActionWorkflow] = {}
    for kind, cls in WORKFLOW_CLASSES.items():
        if kind in _INJECTING:
            out[kind] = cls(deps, ops, injector)  # type: ignore[call-arg]
        else:
            out[kind] = cls(deps, ops)
    return out
