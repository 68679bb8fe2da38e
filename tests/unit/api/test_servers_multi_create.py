"""POST /servers with min_count/max_count (Nova's multi-create): as many servers as the
quota allows up to max_count, none unless min_count fit; named NAME-1..N; one admin
password and one reservation id shared; the answer is the first server or the id."""

from __future__ import annotations

from typing import Any

import pytest

from agent.api import models
from tests.unit.api.conftest import ALICE, TEST_NET, Env, fault


def body(env: Env, **fields: Any) -> dict[str, Any]:
    return {"server": {"name": "web", "imageRef": str(env.cirros.uuid), "flavorRef": "1", **fields}}


async def post(env: Env, payload: Any):
    return await env.client.post("/v2.1/servers", json=payload, headers=ALICE)


def servers_by_name(env: Env) -> dict[str, Any]:
    return {s.name: s for s in env.store.list_servers()}


async def test_min_and_max_three_make_three_servers_named_by_count_answering_the_first(env: Env):
    r = await post(env, body(env, min_count=3, max_count=3))
    assert r.status_code == 202, r.text
    models.CreatedServerShow.model_validate(r.json())
    made = servers_by_name(env)
    assert set(made) == {"web-1", "web-2", "web-3"}
    assert r.json()["server"]["id"] == str(made["web-1"].id)
    assert r.headers["Location"].endswith(f"/servers/{made['web-1'].id}")
    assert len({s.reservation_id for s in made.values()}) == 1
    assert sorted(env.kicked) == sorted(s.id for s in made.values())
    # One admin password for all of them (as Nova), so one hash in every job.
    jobs = env.store.unfinished_jobs()
    assert len({j.payload["admin_pass_hash"] for j in jobs}) == 1
    assert {j.payload["batch"]["size"] for j in jobs} == {3}


async def test_return_reservation_id_answers_the_id_that_lists_exactly_those_servers(env: Env):
    await env.create(name="other")
    r = await post(env, body(env, min_count=2, return_reservation_id="True"))
    assert r.status_code == 202, r.text
    assert set(r.json()) == {"reservation_id"}
    models.CreatedReservation.model_validate(r.json())
    rid = r.json()["reservation_id"]
    assert rid.startswith("r-") and len(rid) == 10
    assert "Location" not in r.headers
    listed = await env.client.get(f"/v2.1/servers/detail?reservation_id={rid}", headers=ALICE)
    assert sorted(s["name"] for s in listed.json()["servers"]) == ["web-1", "web-2"]
    none = await env.client.get("/v2.1/servers?reservation_id=r-00000000", headers=ALICE)
    assert none.json()["servers"] == []


async def test_a_single_create_is_not_renamed_and_has_its_own_reservation_id(env: Env):
    r = await post(env, body(env, return_reservation_id=True))
    [server] = env.store.list_servers()
    assert server.name == "web"
    assert r.json() == {"reservation_id": server.reservation_id}


async def test_min_count_above_max_count_is_a_bad_request_and_makes_nothing(env: Env):
    r = await post(env, body(env, min_count=3, max_count=2))
    assert fault(r, 400, "badRequest") == "min_count must be <= max_count"
    assert env.store.list_servers() == []


async def test_max_count_makes_as_many_as_the_quota_allows_and_names_a_lone_one_plainly(env: Env):
    await env.create(name="first")  # quota: 3 instances
    r = await post(env, body(env, min_count=1, max_count=5))
    assert r.status_code == 202, r.text
    assert set(servers_by_name(env)) == {"first", "web-1", "web-2"}
    # Only one fits: Nova applies the template only when it makes more than one.
    await env.store.update_server(servers_by_name(env)["web-2"].id, {"vm_state": "deleted"}, cause="t")
    r = await post(env, body(env, name="db", max_count=4))
    assert r.status_code == 202, r.text
    assert "db" in servers_by_name(env)


@pytest.mark.parametrize(("counts", "requested"), [({"min_count": 3}, "3"),
                                                   ({"min_count": 3, "max_count": 5}, "3-5")])
async def test_fewer_than_min_count_fitting_is_a_quota_forbidden_and_makes_nothing(
        env: Env, counts: dict[str, int], requested: str):
    await env.create(name="first")
    r = await post(env, body(env, **counts))
    assert fault(r, 403, "forbidden") == (
        f"Quota exceeded for instances: Requested {requested}, but already used 1 of 3 instances")
    assert [s.name for s in env.store.list_servers()] == ["first"]
    assert len(env.store.unfinished_jobs()) == 1


async def test_the_cores_quota_counts_every_server_of_the_request(env: Env):
    env.deps.servers.limits = env.deps.servers.limits.model_copy(update={"max_total_cores": 5})
    r = await post(env, body(env, flavorRef="3", min_count=3))  # 2 vCPUs each
    assert fault(r, 403, "forbidden") == (
        "Quota exceeded for cores: Requested 6, but already used 0 of 5 cores")
    r = await post(env, body(env, flavorRef="3", min_count=1, max_count=3))
    assert r.status_code == 202
    assert sorted(servers_by_name(env)) == ["web-1", "web-2"]


@pytest.mark.parametrize(("network", "words"), [
    ({"port": "6e7f4a6c-6b2a-4d1e-9d8e-2b9d3c4f5a61"}, "single configured port ID"),
    ({"uuid": str(TEST_NET.id), "fixed_ip": "10.213.0.9"}, "fixed_ip is specified"),
])
async def test_a_port_or_fixed_ip_cannot_serve_several_servers(env: Env, network, words):
    r = await post(env, body(env, max_count=2, networks=[network]))
    assert words in fault(r, 400, "badRequest")
    assert env.store.list_servers() == []


async def test_servers_of_one_request_get_distinct_addresses(env: Env):
    r = await post(env, body(env, min_count=3, networks=[{"uuid": str(TEST_NET.id)}]))
    assert r.status_code == 202, r.text
    ports = env.store.list_ports(network_id=TEST_NET.id)
    assert len({p.ip for p in ports}) == len({p.mac for p in ports}) == 3
    assert len({p.device_id for p in ports}) == 3


async def test_a_name_the_template_makes_too_long_is_a_bad_request(env: Env):
    r = await post(env, body(env, name="x" * 254, min_count=2))
    assert "name" in fault(r, 400, "badRequest")
    assert env.store.list_servers() == []
