"""One rule for "the flavor is big enough for the image" (create, rebuild, resize), and one
count of a project's usage behind /limits, /os-quota-sets and the quota checks."""

from __future__ import annotations

from tests.unit.api.conftest import ADMIN, ALICE, Env, fault


async def act(env: Env, server_id: str, body: dict, headers=ALICE):
    return await env.client.post(f"/v2.1/servers/{server_id}/action", json=body, headers=headers)


async def test_rebuild_onto_an_image_too_big_for_the_flavor_names_image_ref(env: Env):
    sid = await env.create_active()  # flavor 1: 256 MiB, 1 GiB; "big" wants 1024 MiB, 2 GiB
    r = await act(env, sid, {"rebuild": {"imageRef": str(env.big.uuid)}})
    message = fault(r, 400, "badRequest")
    assert "disk is too small" in message and "imageRef" in message
    assert env.server(sid).image_id == env.cirros.uuid  # nothing changed


async def test_resize_to_a_flavor_too_small_for_the_image_names_flavor_ref(env: Env):
    sid = await env.create_active(imageRef=str(env.big.uuid), flavorRef="3")  # 1024 MiB, 4 GiB
    env.deps.flavors._by_id["4"] = env.deps.flavors.get("3").model_copy(
        update={"id": "4", "name": "m1.thin", "ram": 512, "disk": 8})
    r = await act(env, sid, {"resize": {"flavorRef": "4"}})
    message = fault(r, 400, "badRequest")
    assert "memory is too small" in message and "flavorRef" in message


async def test_limits_and_quota_sets_count_the_same_usage(env: Env):
    await env.create_active(flavorRef="3")  # 2 vCPUs, 1024 MiB
    await env.create_active(flavorRef="1")  # 1 vCPU, 256 MiB
    await env.create_active(headers=ADMIN)  # another project's: not counted
    absolute = (await env.client.get("/v2.1/limits", headers=ALICE)).json()["limits"]["absolute"]
    quota = (await env.client.get("/v2.1/os-quota-sets/p-alice/detail",
                                  headers=ALICE)).json()["quota_set"]
    assert (absolute["totalInstancesUsed"], absolute["totalCoresUsed"],
            absolute["totalRAMUsed"]) == (2, 3, 1280)
    assert (quota["instances"]["in_use"], quota["cores"]["in_use"],
            quota["ram"]["in_use"]) == (2, 3, 1280)
