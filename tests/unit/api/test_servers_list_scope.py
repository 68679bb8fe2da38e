"""Whose servers a list shows (all_tenants, project_id) and repeated status filters, as Nova."""

from __future__ import annotations

from agent.model.states import VmState
from tests.unit.api.conftest import ADMIN, ALICE, BOB, Env


async def ids(env: Env, headers: dict[str, str], params: list[tuple[str, str]] | None = None,
              status: int = 200) -> set[str]:
    r = await env.client.get("/v2.1/servers/detail", params=params or [], headers=headers)
    assert r.status_code == status, r.text
    return {s["id"] for s in r.json()["servers"]} if status == 200 else set()


async def test_an_admin_lists_its_own_project_unless_it_asks_for_all_tenants(env: Env):
    alices = (await env.create(ALICE))["id"]
    admins = (await env.create(ADMIN))["id"]
    assert await ids(env, ADMIN) == {admins}
    assert await ids(env, ADMIN, [("all_tenants", "True")]) == {alices, admins}
    assert await ids(env, ADMIN, [("all_tenants", "")]) == {alices, admins}
    assert await ids(env, ADMIN, [("all_tenants", "0")]) == {admins}


async def test_an_admin_narrows_all_tenants_to_one_project(env: Env):
    alices = (await env.create(ALICE))["id"]
    bobs = (await env.create(BOB))["id"]
    assert await ids(env, ADMIN, [("all_tenants", "1"), ("project_id", "p-bob")]) == {bobs}
    assert await ids(env, ADMIN, [("all_tenants", "1"), ("tenant_id", "p-alice")]) == {alices}
    # Without all_tenants the filter cannot widen an admin's view (Nova ignores it).
    assert await ids(env, ADMIN, [("project_id", "p-bob")]) == set()


async def test_all_tenants_is_forbidden_to_a_project_user(env: Env):
    await env.create(BOB)
    r = await env.client.get("/v2.1/servers", params={"all_tenants": "1"}, headers=ALICE)
    assert r.status_code == 403
    assert "get_all_tenants" in r.json()["forbidden"]["message"]


async def test_a_value_of_all_tenants_that_is_not_a_boolean_is_a_400_naming_it(env: Env):
    r = await env.client.get("/v2.1/servers", params={"all_tenants": "maybe"}, headers=ADMIN)
    assert r.status_code == 400
    assert "all_tenants" in r.json()["badRequest"]["message"]


async def test_repeated_status_filters_match_any_of_them(env: Env):
    active = await env.create_active()
    stopped = await env.create_active()
    await env.set_state(stopped, VmState.STOPPED)
    building = (await env.create())["id"]
    both = [("status", "ACTIVE"), ("status", "shutoff")]
    assert await ids(env, ALICE, both) == {active, stopped}
    assert building not in await ids(env, ALICE, [("status", "ACTIVE")])
