"""status = f(vm_state, task_state), and every one of the spec's 15 statuses is reachable."""

import pytest

from agent.model.states import Status, TaskState, VmState, status_of


@pytest.mark.parametrize("vm,task,status", [
    (VmState.BUILDING, None, Status.BUILD),
    (VmState.BUILDING, TaskState.SPAWNING, Status.BUILD),
    (VmState.ACTIVE, None, Status.ACTIVE),
    (VmState.ACTIVE, TaskState.REBOOTING, Status.REBOOT),
    (VmState.ACTIVE, TaskState.REBOOTING_HARD, Status.HARD_REBOOT),
    (VmState.ACTIVE, TaskState.UPDATING_PASSWORD, Status.PASSWORD),
    (VmState.ACTIVE, TaskState.REBUILDING, Status.REBUILD),
    (VmState.ACTIVE, TaskState.RESIZE_MIGRATING, Status.RESIZE),
    (VmState.ACTIVE, TaskState.POWERING_OFF, Status.ACTIVE),
    (VmState.STOPPED, None, Status.SHUTOFF),
    (VmState.STOPPED, TaskState.REBUILDING, Status.REBUILD),
    (VmState.RESIZED, None, Status.VERIFY_RESIZE),
    (VmState.RESIZED, TaskState.RESIZE_REVERTING, Status.REVERT_RESIZE),
    (VmState.SUSPENDED, None, Status.SUSPENDED),
    (VmState.RESCUED, None, Status.RESCUE),
    (VmState.ERROR, None, Status.ERROR),
    (VmState.ERROR, TaskState.UPDATING_PASSWORD, Status.PASSWORD),
    (VmState.DELETED, None, Status.DELETED),
    (VmState.UNKNOWN, None, Status.UNKNOWN),
])
def test_status_mapping(vm, task, status):
    assert status_of(vm, task) is status


def test_all_fifteen_statuses_are_reachable():
    reached = {status_of(vm, task) for vm in VmState for task in [None, *TaskState]}
    assert reached == set(Status)
    assert len(Status) == 15
