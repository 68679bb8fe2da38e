"""One table decides which action is legal in which state; refusals name the status."""

import pytest

from agent.model.states import Status, TaskState, VmState
from agent.model.transitions import RULES, Action, IllegalTransition, check_action


def test_reboot_of_active_server_sets_rebooting():
    assert check_action(Action.REBOOT_SOFT, VmState.ACTIVE, None) is TaskState.REBOOTING


def test_start_of_active_server_is_refused_naming_the_status():
    with pytest.raises(IllegalTransition, match="status ACTIVE") as e:
        check_action(Action.START, VmState.ACTIVE, None)
    assert e.value.status is Status.ACTIVE


def test_actions_wait_for_the_task_in_flight():
    with pytest.raises(IllegalTransition, match=r"REBOOT.*rebooting in progress"):
        check_action(Action.STOP, VmState.ACTIVE, TaskState.REBOOTING)


def test_delete_interrupts_a_build_but_not_another_delete():
    assert check_action(Action.DELETE, VmState.BUILDING, TaskState.SPAWNING) is TaskState.DELETING
    with pytest.raises(IllegalTransition, match="already being deleted"):
        check_action(Action.DELETE, VmState.ACTIVE, TaskState.DELETING)


def test_nothing_is_legal_on_a_deleted_server():
    for action in Action:
        with pytest.raises(IllegalTransition, match="DELETED"):
            check_action(action, VmState.DELETED, None)


def test_change_password_recovers_a_server_in_error():
    assert check_action(Action.CHANGE_PASSWORD, VmState.ERROR, None) is TaskState.UPDATING_PASSWORD


def test_every_action_has_a_rule():
    assert set(RULES) == set(Action)
