"""/flavors, /images and /limits."""

from __future__ import annotations

from uuid import uuid4

import pytest

from agent.model.states import VmState
from tests.unit.api.conftest import ADMIN, ALICE, BOB, Env, fault
from tests.unit.fakes.images import make_image


async def get(env: Env, path: str, **params: str):
    return await env.client.get(path, params=params, headers=ALICE)


async def test_flavor_list_gives_id_name_and_links(env: Env):
    r = await get(env, "/v2.1/flavors")
    assert r.status_code == 200
    assert r.json()["flavors"][0] == {"id": "1", "name": "m1.tiny", "links": [
        {"rel": "self", "href": "http://test/v2.1/flavors/1"},
        {"rel": "bookmark", "href": "http://test/flavors/1"}]}
    assert [f["id"] for f in r.json()["flavors"]] == ["1", "2", "3"]


async def test_flavor_detail_and_show_give_nova_s_full_view(env: Env):
    expected = {
        "id": "3", "name": "m1.medium", "ram": 1024, "vcpus": 2, "disk": 4,
        "links": [{"rel": "self", "href": "http://test/v2.1/flavors/3"},
                  {"rel": "bookmark", "href": "http://test/flavors/3"}],
        "OS-FLV-EXT-DATA:ephemeral": 0, "swap": "", "rxtx_factor": 1.0,
        "os-flavor-access:is_public": True, "OS-FLV-DISABLED:disabled": False,
    }
    detail = (await get(env, "/v2.1/flavors/detail")).json()["flavors"]
    assert detail[2] == expected
    assert (await get(env, "/v2.1/flavors/3")).json() == {"flavor": expected}


async def test_flavors_filter_by_min_ram_and_min_disk(env: Env):
    r = await get(env, "/v2.1/flavors/detail", minRam="512")
    assert [f["id"] for f in r.json()["flavors"]] == ["2", "3"]
    r = await get(env, "/v2.1/flavors", minDisk="3")
    assert [f["id"] for f in r.json()["flavors"]] == ["3"]
    r = await get(env, "/v2.1/flavors/detail", is_public="None")  # openstacksdk sends it
    assert len(r.json()["flavors"]) == 3


@pytest.mark.parametrize("param", ["minRam", "minDisk"])
async def test_a_bad_flavor_filter_is_a_bad_request_naming_it(env: Env, param: str):
    assert param in fault(await get(env, "/v2.1/flavors", **{param: "lots"}), 400, "badRequest")


async def test_an_unknown_flavor_is_not_found(env: Env):
    assert "Flavor 42 could not be found." in fault(await get(env, "/v2.1/flavors/42"), 404, "itemNotFound")


async def test_image_list_gives_id_name_and_links(env: Env):
    r = await get(env, "/v2.1/images")
    assert r.status_code == 200
    assert r.json()["images"][0] == {"id": str(env.cirros.uuid), "name": "cirros", "links": [
        {"rel": "self", "href": f"http://test/v2.1/images/{env.cirros.uuid}"},
        {"rel": "bookmark", "href": f"http://test/images/{env.cirros.uuid}"}]}


async def test_image_detail_and_show_give_nova_s_full_view(env: Env):
    detail = (await get(env, "/v2.1/images/detail")).json()["images"]
    big = next(i for i in detail if i["name"] == "big")
    assert big["status"] == "ACTIVE"
    assert big["progress"] == 100
    assert (big["minDisk"], big["minRam"]) == (2, 1024)
    assert big["metadata"] == {}
    assert big["created"] == big["updated"] == "2011-01-01T01:02:03Z"
    assert big["OS-EXT-IMG-SIZE:size"] == 0  # no disk file behind the fake
    shown = (await get(env, f"/v2.1/images/{env.cirros.uuid}")).json()["image"]
    assert shown["metadata"] == {"os_distro": "cirros"}
    assert shown == next(i for i in detail if i["name"] == "cirros")


async def test_image_size_is_the_catalog_s(env: Env):
    image = env.images.add(make_image("sized").model_copy(update={"size": 1234}))
    shown = (await get(env, f"/v2.1/images/{image.uuid}")).json()["image"]
    assert shown["OS-EXT-IMG-SIZE:size"] == 1234


@pytest.mark.parametrize("image_id", [str(uuid4()), "cirros", "not-a-uuid"])
async def test_an_unknown_image_is_not_found(env: Env, image_id: str):
    assert fault(await get(env, f"/v2.1/images/{image_id}"), 404, "itemNotFound") == "Image not found."


async def test_an_image_id_is_matched_in_any_case(env: Env):
    r = await get(env, f"/v2.1/images/{str(env.cirros.uuid).upper()}")
    assert r.status_code == 200


async def test_limits_give_the_absolute_limits_and_the_projects_usage(env: Env):
    await env.create(flavorRef="1")
    await env.create(flavorRef="3")
    gone = (await env.create(flavorRef="3"))["id"]
    await env.set_state(gone, VmState.DELETED)
    await env.create(BOB, flavorRef="2")
    r = await get(env, "/v2.1/limits")
    assert r.status_code == 200
    assert r.json() == {"limits": {"rate": [], "absolute": {
        "maxServerMeta": 5, "maxPersonality": 2, "maxPersonalitySize": 10240,
        "maxTotalInstances": 3, "maxTotalCores": 20, "maxTotalRAMSize": 51200, "maxImageMeta": 128,
        "maxTotalKeypairs": 100, "maxSecurityGroups": -1, "maxSecurityGroupRules": -1,
        "maxServerGroups": 10, "maxServerGroupMembers": 10, "maxTotalFloatingIps": -1,
        "totalInstancesUsed": 2, "totalCoresUsed": 3, "totalRAMUsed": 1280,
        "totalSecurityGroupsUsed": 0, "totalFloatingIpsUsed": 0, "totalServerGroupsUsed": 0,
    }}}


async def test_limits_of_a_project_without_servers_show_no_usage(env: Env):
    absolute = (await env.client.get("/v2.1/p-bob/limits", headers=BOB)).json()["limits"]["absolute"]
    assert (absolute["totalInstancesUsed"], absolute["totalCoresUsed"], absolute["totalRAMUsed"]) == (0, 0, 0)


async def test_image_delete_is_refused_while_a_server_uses_it_then_removes_it(env: Env):

    server_id = await env.create_active(imageRef=str(env.big.uuid), flavorRef="3")
    path = f"/v2.1/images/{env.big.uuid}"
    message = fault(await env.client.delete(path, headers=ADMIN), 409, "conflictingRequest")
    assert "in use by 1 server" in message and server_id in message
    assert env.images.get("big") == env.big
    await env.set_state(server_id, VmState.DELETED)
    r = await env.client.delete(path, headers=ADMIN)
    assert r.status_code == 204
    assert [i.name for i in env.images.list()] == ["cirros"]
    fault(await env.client.get(path, headers=ADMIN), 404, "itemNotFound")
    fault(await env.client.delete(path, headers=ADMIN), 404, "itemNotFound")


async def test_image_delete_is_for_admins_only(env: Env):
    fault(await env.client.delete(f"/v2.1/images/{env.cirros.uuid}", headers=ALICE), 403,
          "forbidden")
    assert env.images.get("cirros") == env.cirros
