"""POST /servers/{id}/action over the API: bodies as the Compute API names them, 202 with
an empty body (rescue: 200 with its adminPass; rebuild: 202 with the server and its new
adminPass), the job committed before the answer, 400 for an unknown action, 409 naming
the status, and no secret ever echoed."""

from __future__ import annotations

from typing import Any

import pytest

from agent.api.models_actions import RebuiltServerShow, RescueResult
from agent.model.job import JobKind
from agent.model.states import TaskState, VmState
from tests.unit.api.conftest import ALICE, BOB, Env, fault

SIMPLE = [
    ({"os-stop": None}, VmState.ACTIVE, JobKind.STOP, TaskState.POWERING_OFF),
    ({"os-start": None}, VmState.STOPPED, JobKind.START, TaskState.POWERING_ON),
    ({"suspend": None}, VmState.ACTIVE, JobKind.SUSPEND, TaskState.SUSPENDING),
    ({"resume": None}, VmState.SUSPENDED, JobKind.RESUME, TaskState.RESUMING),
    ({"unrescue": None}, VmState.RESCUED, JobKind.UNRESCUE, TaskState.UNRESCUING),
    ({"confirmResize": None}, VmState.RESIZED, JobKind.CONFIRM_RESIZE, TaskState.RESIZE_CONFIRMING),
    ({"revertResize": None}, VmState.RESIZED, JobKind.REVERT_RESIZE, TaskState.RESIZE_REVERTING),
    ({"reboot": {"type": "SOFT"}}, VmState.ACTIVE, JobKind.REBOOT, TaskState.REBOOTING),
    ({"reboot": {"type": "hard"}}, VmState.ACTIVE, JobKind.REBOOT, TaskState.REBOOTING_HARD),
    ({"resize": {"flavorRef": "2"}}, VmState.ACTIVE, JobKind.RESIZE, TaskState.RESIZE_PREP),
    ({"changePassword": {"adminPass": "New-Passw0rd"}}, VmState.ACTIVE, JobKind.CHANGE_PASSWORD,
     TaskState.UPDATING_PASSWORD),
    ({"os-stop": {}}, VmState.ACTIVE, JobKind.STOP, TaskState.POWERING_OFF),
]


async def act(env: Env, server_id: str, body: Any, headers: dict[str, str] | None = None):
    return await env.client.post(f"/v2.1/servers/{server_id}/action", json=body,
                                 headers=headers or ALICE)


def jobs_of(env: Env, server_id: str):
    return [j for j in env.store.unfinished_jobs() if str(j.server_id) == server_id]


@pytest.mark.parametrize(("body", "state", "kind", "task"), SIMPLE)
async def test_an_action_is_committed_before_the_202(env: Env, body, state, kind, task):
    sid = await env.create_active()
    await env.set_state(sid, state)
    r = await act(env, sid, body)
    assert r.status_code == 202, r.text
    assert r.content == b"" and r.headers["content-type"].startswith("text/plain")
    assert env.server(sid).task_state is task
    assert [j.kind for j in jobs_of(env, sid)][-1] is kind
    assert env.kicked[-1] == env.server(sid).id
    assert "New-Passw0rd" not in str(jobs_of(env, sid)[-1].payload)


async def test_an_illegal_action_is_a_409_naming_the_status(env: Env):
    sid = await env.create_active()
    message = fault(await act(env, sid, {"os-start": None}), 409, "conflictingRequest")
    assert message == "Cannot 'os-start' server while it is in status ACTIVE"
    await env.set_state(sid, VmState.SUSPENDED)
    message = fault(await act(env, sid, {"reboot": {"type": "HARD"}}), 409, "conflictingRequest")
    assert "SUSPENDED" in message
    assert (await act(env, sid, {"resume": None})).status_code == 202
    message = fault(await act(env, sid, {"resume": None}), 409, "conflictingRequest")
    assert message.endswith("in status SUSPENDED (task resuming in progress)")


@pytest.mark.parametrize(("body", "says"), [
    ({"fly": None}, "no such action: fly"),
    ({}, "exactly one action"),
    ({"os-stop": None, "os-start": None}, "exactly one action"),
    ([{"os-stop": None}], "Malformed request body"),
    ({"reboot": {"type": "GENTLE"}}, "type"),
    ({"reboot": None}, "reboot"),
    ({"resize": {}}, "flavorRef"),
    ({"resize": {"flavorRef": "9"}}, "Flavor 9 could not be found"),
    ({"os-stop": {"force": True}}, "force"),
    ({"rebuild": {"imageRef": "no-such-image"}}, "image"),
    ({"changePassword": {}}, "adminPass"),
])
async def test_bad_bodies_are_a_400_that_says_why(env: Env, body, says):
    sid = await env.create_active()
    message = fault(await act(env, sid, body), 400, "badRequest")
    assert says in message
    assert jobs_of(env, sid) == [] or [j.kind for j in jobs_of(env, sid)] == [JobKind.CREATE]


async def test_an_empty_body_is_a_400(env: Env):
    sid = await env.create_active()
    r = await env.client.post(f"/v2.1/servers/{sid}/action", content=b"", headers=ALICE)
    fault(r, 400, "badRequest")


async def test_another_projects_server_and_a_bad_id_are_404(env: Env):
    sid = await env.create_active()
    fault(await act(env, sid, {"os-stop": None}, headers=BOB), 404, "itemNotFound")
    fault(await act(env, "not-a-uuid", {"os-stop": None}), 404, "itemNotFound")
    assert env.server(sid).task_state is None


async def test_rescue_answers_the_rescue_password(env: Env):
    sid = await env.create_active()
    r = await act(env, sid, {"rescue": None})
    assert r.status_code == 200
    generated = RescueResult.model_validate(r.json()).adminPass
    assert len(generated) >= 8 and generated not in str(jobs_of(env, sid)[-1].payload)
    await env.set_state(sid, VmState.ACTIVE)
    r = await act(env, sid, {"rescue": {"adminPass": "Rescue-Passw0rd",
                                        "rescue_image_ref": str(env.cirros.uuid)}})
    assert r.json() == {"adminPass": "Rescue-Passw0rd"}
    assert jobs_of(env, sid)[-1].payload["rescue_image_id"] == str(env.cirros.uuid)


async def test_rebuild_answers_the_server_and_its_new_password(env: Env):
    sid = await env.create_active()
    r = await act(env, sid, {"rebuild": {"imageRef": str(env.cirros.uuid), "name": "again",
                                         "metadata": {"a": "b"}}})
    assert r.status_code == 202, r.text
    shown = RebuiltServerShow.model_validate(r.json()).server
    assert (shown.status, shown.name, shown.metadata) == ("REBUILD", "again", {"a": "b"})
    assert shown.adminPass and shown.adminPass not in str(jobs_of(env, sid)[-1].payload)


async def test_a_weak_password_is_refused_without_being_echoed(env: Env):
    sid = await env.create_active()
    for body in ({"changePassword": {"adminPass": "weakling"}},
                 {"rescue": {"adminPass": "weakling"}},
                 {"rebuild": {"imageRef": str(env.cirros.uuid), "adminPass": "weakling"}}):
        r = await act(env, sid, body)
        assert "password policy" in fault(r, 400, "badRequest")
        assert "weakling" not in r.text
    r = await act(env, sid, {"changePassword": {"adminPass": 12345678}})
    assert "12345678" not in fault(r, 400, "badRequest")
