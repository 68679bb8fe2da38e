"""The server state model: vm_state (stable), task_state (in flight), power_state
(observed), and the API status as a pure function of the first two, as Nova has it."""

from __future__ import annotations

from enum import StrEnum


class VmState(StrEnum):
    BUILDING = "building"
    ACTIVE = "active"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    RESCUED = "rescued"
    RESIZED = "resized"
    ERROR = "error"
    DELETED = "deleted"
    # Not one of Nova's vm_states: the agent cannot currently tell (libvirt unreachable,
    # domain vanished). Shown as UNKNOWN, as the spec asks: "Contact your cloud provider".
    UNKNOWN = "unknown"


class TaskState(StrEnum):
    SPAWNING = "spawning"
    REBOOTING = "rebooting"
    REBOOTING_HARD = "rebooting_hard"
    UPDATING_PASSWORD = "updating_password"  # noqa: S105 - a state name
    REBUILDING = "rebuilding"
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    RESCUING = "rescuing"
    UNRESCUING = "unrescuing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    DELETING = "deleting"


class Status(StrEnum):
    """The spec's 15 server statuses."""

    ACTIVE = "ACTIVE"
    BUILD = "BUILD"
    DELETED = "DELETED"
    ERROR = "ERROR"
    HARD_REBOOT = "HARD_REBOOT"
    PASSWORD = "PASSWORD"  # noqa: S105 - a status name, not a secret
    REBOOT = "REBOOT"
    REBUILD = "REBUILD"
    RESCUE = "RESCUE"
    RESIZE = "RESIZE"
    REVERT_RESIZE = "REVERT_RESIZE"
    SHUTOFF = "SHUTOFF"
    SUSPENDED = "SUSPENDED"
    UNKNOWN = "UNKNOWN"
    VERIFY_RESIZE = "VERIFY_RESIZE"


_RESIZING = {TaskState.RESIZE_PREP: Status.RESIZE, TaskState.RESIZE_MIGRATING: Status.RESIZE,
             TaskState.RESIZE_FINISH: Status.RESIZE}

# (vm_state) -> {task_state or None (default): status}; from nova.api.openstack.common.
_STATUS_MAP: dict[VmState, dict[TaskState | None, Status]] = {
    VmState.BUILDING: {None: Status.BUILD},
    VmState.ACTIVE: {
        None: Status.ACTIVE,
        TaskState.REBOOTING: Status.REBOOT,
        TaskState.REBOOTING_HARD: Status.HARD_REBOOT,
        TaskState.UPDATING_PASSWORD: Status.PASSWORD,
        TaskState.REBUILDING: Status.REBUILD,
        **_RESIZING,
    },
    VmState.STOPPED: {None: Status.SHUTOFF, TaskState.REBUILDING: Status.REBUILD, **_RESIZING},
    VmState.RESIZED: {None: Status.VERIFY_RESIZE, TaskState.RESIZE_REVERTING: Status.REVERT_RESIZE},
    VmState.SUSPENDED: {None: Status.SUSPENDED},
    VmState.RESCUED: {None: Status.RESCUE},
    VmState.ERROR: {None: Status.ERROR, TaskState.REBUILDING: Status.REBUILD,
                    TaskState.UPDATING_PASSWORD: Status.PASSWORD},
    VmState.DELETED: {None: Status.DELETED},
    VmState.UNKNOWN: {None: Status.UNKNOWN},
}


def status_of(vm_state: VmState, task_state: TaskState | None) -> Status:
    """The API status. Unmapped task states show the vm_state's default status."""
    by_task = _STATUS_MAP[vm_state]
    return by_task.get(task_state, by_task[None]) if task_state else by_task[None]
