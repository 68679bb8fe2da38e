"""/os-server-groups as Nova 2.1 answers it (create 200, list, show, delete 204; the view's
fields as _format_server_group has them before 2.13), each project sees its own, bad input
is a 400 naming the field; the create hint {"group": id} is checked (unknown: 400, Nova's
text), recorded (the server is a member) and its quotas kept."""

from __future__ import annotations

import uuid

import pytest

from agent.api import models_fleet
from agent.model.states import VmState
from tests.unit.api.conftest import ADMIN, ALICE, BOB, Env, fault

SG = "/v2.1/os-server-groups"


async def make_group(env: Env, headers=ALICE, name="web", policy="anti-affinity") -> dict:
    r = await env.client.post(SG, headers=headers,
                              json={"server_group": {"name": name, "policies": [policy]}})
    assert r.status_code == 200, r.text
    models_fleet.ServerGroupShow.model_validate(r.json())
    return r.json()["server_group"]


async def create_in(env: Env, group_id: str, headers=ALICE, **fields):
    body = {"server": {"name": "vm", "imageRef": str(env.cirros.uuid), "flavorRef": "1",
                       "networks": "none", **fields},
            "os:scheduler_hints": {"group": group_id}}
    return await env.client.post("/v2.1/servers", headers=headers, json=body)


@pytest.mark.parametrize("policy", ["affinity", "anti-affinity", "soft-affinity",
                                    "soft-anti-affinity"])
async def test_create_answers_200_with_novas_2_1_view(env: Env, policy: str):
    group = await make_group(env, policy=policy)
    assert set(group) == {"id", "name", "policies", "members", "metadata"}
    assert uuid.UUID(group["id"])
    assert (group["name"], group["policies"], group["members"], group["metadata"]) == (
        "web", [policy], [], {})


async def test_list_show_and_delete(env: Env):
    a = await make_group(env, name="a")
    b = await make_group(env, name="b", policy="affinity")
    listed = await env.client.get(SG, headers=ALICE)
    models_fleet.ServerGroupIndex.model_validate(listed.json())
    assert [g["name"] for g in listed.json()["server_groups"]] == ["a", "b"]
    page = await env.client.get(f"{SG}?limit=1&offset=1", headers=ALICE)
    assert [g["id"] for g in page.json()["server_groups"]] == [b["id"]]
    assert (await env.client.get(f"{SG}/{a['id']}", headers=ALICE)).json() == {"server_group": a}
    r = await env.client.delete(f"{SG}/{a['id']}", headers=ALICE)
    assert (r.status_code, r.content) == (204, b"")
    message = fault(await env.client.get(f"{SG}/{a['id']}", headers=ALICE), 404, "itemNotFound")
    assert message == f"Instance group {a['id']} could not be found."
    fault(await env.client.delete(f"{SG}/{a['id']}", headers=ALICE), 404, "itemNotFound")
    fault(await env.client.get(f"{SG}/not-a-uuid", headers=ALICE), 404, "itemNotFound")


async def test_a_project_sees_only_its_own_and_an_admin_every_one_with_all_projects(env: Env):
    mine = await make_group(env)
    await make_group(env, BOB, name="bobs")
    listed = (await env.client.get(SG, headers=ALICE)).json()["server_groups"]
    assert [g["id"] for g in listed] == [mine["id"]]
    fault(await env.client.get(f"{SG}/{mine['id']}", headers=BOB), 404, "itemNotFound")
    fault(await env.client.delete(f"{SG}/{mine['id']}", headers=BOB), 404, "itemNotFound")
    everyone = (await env.client.get(f"{SG}?all_projects=1", headers=ADMIN)).json()["server_groups"]
    assert {g["name"] for g in everyone} == {"web", "bobs"}
    assert (await env.client.get(f"{SG}?all_projects=1", headers=BOB)).json()["server_groups"][0][
        "name"] == "bobs"  # ignored for a non-admin, as in Nova
    assert (await env.client.get(f"{SG}/{mine['id']}", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize(("body", "words"), [
    ({"name": "g", "policies": ["anti-affinity", "affinity"]}, "policies"),
    ({"name": "g", "policies": []}, "policies"),
    ({"name": "g", "policies": ["legacy"]}, "policies"),
    ({"name": "g", "policy": "affinity"}, "'policies' is a required property"),  # 2.64's
    ({"name": "g"}, "'policies' is a required property"),
    ({"name": " g", "policies": ["affinity"]}, "name"),
    ({"name": "", "policies": ["affinity"]}, "name"),
    ({"name": "g", "policies": ["affinity"], "rules": {}}, "'rules' was unexpected"),
])
async def test_bad_input_is_a_400_naming_the_field_and_makes_nothing(env: Env, body, words):
    r = await env.client.post(SG, headers=ALICE, json={"server_group": body})
    assert words in fault(r, 400, "badRequest")
    assert (await env.client.get(SG, headers=ALICE)).json() == {"server_groups": []}


async def test_the_groups_quota_is_a_403_as_nova_words_it_and_shows_in_limits(env: Env):
    for i in range(10):
        await make_group(env, name=f"g{i}")
    r = await env.client.post(SG, headers=ALICE,
                              json={"server_group": {"name": "one more", "policies": ["affinity"]}})
    assert fault(r, 403, "forbidden") == "Quota exceeded, too many server groups."
    absolute = (await env.client.get("/v2.1/limits", headers=ALICE)).json()["limits"]["absolute"]
    assert (absolute["maxServerGroups"], absolute["totalServerGroupsUsed"]) == (10, 10)
    quota = (await env.client.get("/v2.1/os-quota-sets/p-alice/detail", headers=ALICE)).json()
    assert quota["quota_set"]["server_groups"] == {"limit": 10, "in_use": 10, "reserved": 0}
    assert (await make_group(env, BOB))["name"] == "web"  # per project


async def test_a_server_created_with_the_hint_is_a_member_until_deleted(env: Env):
    group = await make_group(env)
    first = await create_in(env, group["id"].upper())  # any spelling of the UUID
    assert first.status_code == 202, first.text
    sid = first.json()["server"]["id"]
    assert env.server(sid).scheduler_hints == {"group": group["id"]}  # canonical
    shown = (await env.client.get(f"{SG}/{group['id']}", headers=ALICE)).json()["server_group"]
    assert shown["members"] == [sid]
    await env.set_state(sid, VmState.DELETED)
    shown = (await env.client.get(f"{SG}/{group['id']}", headers=ALICE)).json()["server_group"]
    assert shown["members"] == []


@pytest.mark.parametrize(("group_id", "message"), [
    ("3c1f6b1e-8a4e-4a51-9a0e-6a3f7f1b2c3d",
     "Instance group 3c1f6b1e-8a4e-4a51-9a0e-6a3f7f1b2c3d could not be found."),
    ("nope", "Invalid input for field/attribute group. Value: nope. 'nope' is not a 'uuid'"),
])
async def test_an_unknown_group_hint_is_a_400_and_makes_no_server(env: Env, group_id, message):
    assert fault(await create_in(env, group_id), 400, "badRequest") == message
    assert env.store.list_servers() == []


async def test_another_projects_group_is_unknown_to_the_hint(env: Env):
    bobs = await make_group(env, BOB)
    assert fault(await create_in(env, bobs["id"]), 400, "badRequest") == (
        f"Instance group {bobs['id']} could not be found.")


async def test_the_members_quota_is_a_403_as_nova_words_it(env: Env):
    env.deps.servers.limits = env.deps.servers.limits.model_copy(update={"max_total_instances": 20})
    env.deps.servers.groups.limits = env.deps.servers.limits.model_copy(
        update={"max_server_group_members": 2})
    group = await make_group(env)
    r = await create_in(env, group["id"], min_count=3)
    assert fault(r, 403, "forbidden") == "Quota exceeded, too many servers in group"
    assert env.store.list_servers() == []
    assert (await create_in(env, group["id"], min_count=2)).status_code == 202
    assert fault(await create_in(env, group["id"]), 403, "forbidden") == (
        "Quota exceeded, too many servers in group")
