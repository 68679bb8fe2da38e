"""PUT /servers/{id} and DELETE /servers/{id}."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from agent.errors import StaleServer
from agent.model.states import TaskState, VmState
from tests.unit.api.conftest import ADMIN, ALICE, BOB, Env, fault


async def put(env: Env, sid: str, body: Any, headers: dict[str, str] = ALICE):
    return await env.client.put(f"/v2.1/servers/{sid}", json=body, headers=headers)


async def test_update_renames_and_answers_the_full_view(env: Env):
    sid = await env.create_active()
    r = await put(env, sid, {"server": {"name": "renamed"}})
    assert r.status_code == 200
    s = r.json()["server"]
    assert s["name"] == "renamed"
    assert s["id"] == sid and s["status"] == "ACTIVE" and "hostId" in s
    assert env.server(sid).name == "renamed"


async def test_update_sets_access_addresses(env: Env):
    sid = await env.create_active()
    r = await put(env, sid, {"server": {"accessIPv4": "198.51.100.7", "accessIPv6": "2001:db8::7",
                                        "OS-DCF:diskConfig": "AUTO"}})
    s = r.json()["server"]
    assert (s["accessIPv4"], s["accessIPv6"]) == ("198.51.100.7", "2001:db8::7")


async def test_an_empty_update_changes_nothing(env: Env):
    sid = await env.create_active(name="keep")
    r = await put(env, sid, {"server": {}})
    assert r.status_code == 200
    assert r.json()["server"]["name"] == "keep"


async def test_a_building_server_may_be_renamed(env: Env):
    sid = (await env.create())["id"]
    assert (await put(env, sid, {"server": {"name": "early"}})).status_code == 200


@pytest.mark.parametrize(("body", "named"), [
    ({"server": {"name": ""}}, "name"),
    ({"server": {"name": " x"}}, "name"),
    ({"server": {"name": 3}}, "name"),
    ({"server": {"accessIPv4": "300.1.1.1"}}, "accessIPv4"),
    ({"server": {"accessIPv6": "nope"}}, "accessIPv6"),
    ({"server": {"adminPass": "Secret-123"}}, "adminPass"),
    ({"server": {"metadata": {}}}, "metadata"),
    ({"server": {"name": "x"}, "extra": 1}, "extra"),
    ({"name": "x"}, "server"),
])
async def test_invalid_updates_are_bad_requests_naming_the_field(env: Env, body: Any, named: str):
    sid = await env.create_active(name="before")
    assert named in fault(await put(env, sid, body), 400, "badRequest")
    assert env.server(sid).name == "before"


async def test_update_of_an_unknown_or_deleted_server_is_not_found(env: Env):
    fault(await put(env, str(uuid4()), {"server": {"name": "x"}}), 404, "itemNotFound")
    sid = await env.create_active()
    await env.set_state(sid, VmState.DELETED)
    fault(await put(env, sid, {"server": {"name": "x"}}), 404, "itemNotFound")


async def test_delete_answers_204_and_starts_the_delete_job(env: Env):
    sid = await env.create_active()
    env.kicked.clear()
    r = await env.client.delete(f"/v2.1/servers/{sid}", headers=ALICE)
    assert r.status_code == 204
    assert r.content == b""
    assert env.server(sid).task_state is TaskState.DELETING
    assert env.kicked == [UUID(sid)]


async def test_a_building_server_may_be_deleted(env: Env):
    sid = (await env.create())["id"]
    assert (await env.client.delete(f"/v2.1/servers/{sid}", headers=ALICE)).status_code == 204


async def test_a_second_delete_while_deleting_is_204_and_starts_no_second_job(env: Env):
    """Clients retry deletes; Nova answers 204 again while the first one runs."""
    sid = await env.create_active()
    await env.client.delete(f"/v2.1/servers/{sid}", headers=ALICE)
    jobs_before = env.store.unfinished_jobs()
    r = await env.client.delete(f"/v2.1/servers/{sid}", headers=ALICE)
    assert r.status_code == 204 and r.content == b""
    assert env.server(sid).task_state is TaskState.DELETING
    assert env.store.unfinished_jobs() == jobs_before


async def test_delete_of_a_deleted_server_is_not_found(env: Env):
    sid = await env.create_active()
    await env.set_state(sid, VmState.DELETED)
    fault(await env.client.delete(f"/v2.1/servers/{sid}", headers=ALICE), 404, "itemNotFound")


async def test_delete_of_another_projects_server_is_not_found(env: Env):
    sid = await env.create_active()
    fault(await env.client.delete(f"/v2.1/servers/{sid}", headers=BOB), 404, "itemNotFound")
    assert env.server(sid).task_state is None


async def test_an_admin_may_delete_any_server(env: Env):
    sid = await env.create_active()
    assert (await env.client.delete(f"/v2.1/servers/{sid}", headers=ADMIN)).status_code == 204


async def test_a_lost_race_with_another_change_is_a_conflict(env: Env, monkeypatch: pytest.MonkeyPatch):
    sid = await env.create_active()

    def stale(*args: Any, **kwargs: Any):
        raise StaleServer(f"server {sid} is vm_state=active (expected something else)")

    monkeypatch.setattr(env.store, "add_job", stale)
    r = await env.client.delete(f"/v2.1/servers/{sid}", headers=ALICE)
    assert fault(r, 409, "conflictingRequest") == "Server changed, try again."
