"""Every action is refused (409, naming the status) in every state the transition table
does not allow, before anything is committed; and allowed, with its task, where it is."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import pytest
from pydantic import SecretStr

from agent.core.actions import ServerActions
from agent.errors import ServerNotFound
from agent.model.actions import RebuildServer
from agent.model.states import TaskState, VmState
from agent.model.transitions import RULES, Action, IllegalTransition
from tests.unit.core.actions.conftest import ALICE
from tests.unit.core.conftest import BOB, IMAGE_ID

Call = Callable[[ServerActions, UUID], object]
CALLS: dict[Action, Call] = {
    Action.REBOOT_SOFT: lambda a, s: a.reboot(ALICE, s, hard=False),
    Action.REBOOT_HARD: lambda a, s: a.reboot(ALICE, s, hard=True),
    Action.STOP: lambda a, s: a.simple(ALICE, s, "os-stop"),
    Action.START: lambda a, s: a.simple(ALICE, s, "os-start"),
    Action.SUSPEND: lambda a, s: a.simple(ALICE, s, "suspend"),
    Action.RESUME: lambda a, s: a.simple(ALICE, s, "resume"),
    Action.RESCUE: lambda a, s: a.rescue(ALICE, s),
    Action.UNRESCUE: lambda a, s: a.simple(ALICE, s, "unrescue"),
    Action.RESIZE: lambda a, s: a.resize(ALICE, s, "2"),
    Action.CONFIRM_RESIZE: lambda a, s: a.simple(ALICE, s, "confirmResize"),
    Action.REVERT_RESIZE: lambda a, s: a.simple(ALICE, s, "revertResize"),
    Action.REBUILD: lambda a, s: a.rebuild(ALICE, s, RebuildServer(image_ref=IMAGE_ID)),
    Action.CHANGE_PASSWORD: lambda a, s: a.change_password(ALICE, s, "Passw0rd-Ok"),
}
STATES = [VmState.BUILDING, VmState.ACTIVE, VmState.STOPPED, VmState.SUSPENDED, VmState.RESCUED,
          VmState.RESIZED, VmState.ERROR, VmState.UNKNOWN]


@pytest.fixture
def server_in(aw):
    """A server (not built: no job runs) put in the given state."""
    async def make(vm_state: VmState, task: TaskState | None = None) -> UUID:
        server, _ = await aw.create()
        for job in aw.store.unfinished_jobs():  # the create job is not what is tested
            await aw.store.update_job(job.id, {"status": "cancelled"})
        await aw.set_state(server.id, vm_state, task)
        return server.id
    return make


@pytest.mark.parametrize("action", list(CALLS))
@pytest.mark.parametrize("vm_state", STATES)
async def test_the_table_decides(aw, server_in, action: Action, vm_state: VmState):
    aw.w.service.kick = lambda _id: None
    aw.actions.servers.limits = aw.actions.servers.limits.model_copy(
        update={"max_total_instances": 100})
    sid = await server_in(vm_state)
    legal = vm_state in RULES[action].from_states
    if legal:
        await CALLS[action](aw.actions, sid)
        assert aw.server(sid).task_state is RULES[action].task
        assert [j.server_id for j in aw.store.unfinished_jobs()] == [sid]
    else:
        before = aw.server(sid)
        with pytest.raises(IllegalTransition) as e:
            await CALLS[action](aw.actions, sid)
        assert f"in status {before.status.value}" in str(e.value)
        assert aw.server(sid).task_state is None and aw.store.unfinished_jobs() == []


@pytest.mark.parametrize("action", list(CALLS))
async def test_no_action_while_another_task_is_in_flight(aw, server_in, action: Action):
    aw.w.service.kick = lambda _id: None
    sid = await server_in(VmState.ACTIVE, TaskState.REBOOTING)
    with pytest.raises(IllegalTransition, match=r"in status REBOOT"):
        await CALLS[action](aw.actions, sid)


async def test_another_projects_server_is_not_found(aw, server_in):
    aw.w.service.kick = lambda _id: None
    sid = await server_in(VmState.ACTIVE)
    with pytest.raises(ServerNotFound):
        await aw.actions.reboot(BOB, sid, hard=True)
    with pytest.raises(ServerNotFound):
        await aw.actions.change_password(BOB, sid, "Passw0rd-Ok")
    assert aw.server(sid).task_state is None


async def test_a_password_never_shows_in_a_repr(aw):
    req = RebuildServer(image_ref=IMAGE_ID, admin_pass=SecretStr("Secret-Passw0rd"))
    assert "Secret-Passw0rd" not in repr(req)
