"""Version discovery, the microversion rules, and the headers every response carries."""

from __future__ import annotations

import re

import pytest
import structlog

from tests.unit.api.conftest import ALICE, Env, fault

VERSION = {
    "id": "v2.1",
    "status": "CURRENT",
    "version": "2.1",
    "min_version": "2.1",
    "updated": "2013-07-23T11:33:21Z",
    "links": [{"rel": "self", "href": "http://test/v2.1/"},
              {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
    "media-types": [{"base": "application/json",
                     "type": "application/vnd.openstack.compute+json;version=2.1"}],
}
# GET / as Nova answers it: the legacy v2.0 entry too, and only self links.
VERSIONS = [
    {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
     "updated": "2011-01-21T11:33:21Z", "links": [{"rel": "self", "href": "http://test/v2/"}]},
    {"id": "v2.1", "status": "CURRENT", "version": "2.1", "min_version": "2.1",
     "updated": "2013-07-23T11:33:21Z", "links": [{"rel": "self", "href": "http://test/v2.1/"}]},
]
REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def test_root_lists_nova_s_versions_without_authentication(env: Env):
    r = await env.client.get("/")
    assert r.status_code == 200
    assert r.json() == {"versions": VERSIONS}


@pytest.mark.parametrize("path", ["/v2.1", "/v2.1/"])
async def test_v21_shows_its_version_without_authentication(env: Env, path: str):
    r = await env.client.get(path)
    assert r.status_code == 200
    assert r.json() == {"version": VERSION}


async def test_version_discovery_ignores_the_microversion_headers(env: Env):
    r = await env.client.get("/v2.1/", headers={"OpenStack-API-Version": "compute 2.99"})
    assert r.status_code == 200


@pytest.mark.parametrize("headers", [
    {"OpenStack-API-Version": "compute 2.1"},
    {"OpenStack-API-Version": "compute latest"},
    {"OpenStack-API-Version": "COMPUTE Latest"},
    {"X-OpenStack-Nova-API-Version": "2.1"},
    {"X-OpenStack-Nova-API-Version": "latest"},
    {"OpenStack-API-Version": "volume 3.0"},  # another service's version: not ours to judge
    {"OpenStack-API-Version": "volume 3.0, compute 2.1"},
])
async def test_microversion_2_1_or_latest_is_accepted(env: Env, headers: dict[str, str]):
    r = await env.client.get("/v2.1/flavors", headers={**ALICE, **headers})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("headers", [
    {"OpenStack-API-Version": "compute 2.2"},
    {"OpenStack-API-Version": "compute 2.0"},
    {"OpenStack-API-Version": "compute 3.1"},
    {"X-OpenStack-Nova-API-Version": "2.96"},
    {"OpenStack-API-Version": "compute 2.5", "X-OpenStack-Nova-API-Version": "2.1"},
])
async def test_other_microversions_are_not_acceptable(env: Env, headers: dict[str, str]):
    r = await env.client.get("/v2.1/flavors", headers={**ALICE, **headers})
    message = fault(r, 406, "computeFault")
    assert "is not supported by the API. Minimum is 2.1 and maximum is 2.1." in message


async def test_the_new_header_wins_over_the_legacy_one(env: Env):
    headers = {**ALICE, "OpenStack-API-Version": "compute 2.1", "X-OpenStack-Nova-API-Version": "2.7"}
    r = await env.client.get("/v2.1/flavors", headers=headers)
    assert r.status_code == 200


@pytest.mark.parametrize("value", ["compute abc", "compute 2", "compute 2.01x"])
async def test_a_malformed_microversion_is_a_bad_request(env: Env, value: str):
    r = await env.client.get("/v2.1/flavors", headers={**ALICE, "OpenStack-API-Version": value})
    assert "is of invalid format" in fault(r, 400, "badRequest")


def assert_version_headers(r) -> None:
    assert r.headers["OpenStack-API-Version"] == "compute 2.1"
    assert r.headers["X-OpenStack-Nova-API-Version"] == "2.1"
    assert "OpenStack-API-Version" in r.headers["Vary"]
    assert "X-OpenStack-Nova-API-Version" in r.headers["Vary"]
    assert REQUEST_ID.match(r.headers["x-openstack-request-id"])
    assert r.headers["x-compute-request-id"] == r.headers["x-openstack-request-id"]


async def test_every_response_carries_the_version_and_request_id_headers(env: Env):
    server_id = await env.create_active()
    responses = [
        await env.client.get("/"),
        await env.client.get("/v2.1"),
        await env.client.get("/openapi.json"),
        await env.client.get("/v2.1/servers"),  # 401
        await env.client.get("/v2.1/servers", headers={"X-Auth-Token": "nope"}),  # 401
        await env.client.get("/v2.1/nothing-here", headers=ALICE),  # 404
        await env.client.patch(f"/v2.1/servers/{server_id}", headers=ALICE),  # 405
        await env.client.get("/v2.1/servers", headers={**ALICE, "OpenStack-API-Version": "compute 9.9"}),
        await env.client.post("/v2.1/servers", content=b"{", headers=ALICE),  # 400
        await env.client.post("/v2.1/servers", content=b" " * 200_000, headers=ALICE),  # 413
        await env.client.post("/v2.1/servers", json={"server": {
            "name": "x", "imageRef": str(env.cirros.uuid), "flavorRef": "1"}}, headers=ALICE),  # 202
        await env.client.get(f"/v2.1/servers/{server_id}", headers=ALICE),
        await env.client.get("/v2.1/servers?all_tenants=1", headers=ALICE),  # 403
        await env.client.post(f"/v2.1/servers/{server_id}/action", json={"os-start": None},
                              headers=ALICE),  # 409
        await env.client.delete(f"/v2.1/servers/{server_id}", headers=ALICE),  # 204
    ]
    assert {r.status_code for r in responses} >= {200, 202, 204, 400, 401, 403, 404, 405, 406, 409, 413}
    for r in responses:
        assert_version_headers(r)
        if r.status_code != 204:
            assert r.headers["content-type"] == "application/json"


async def test_each_request_gets_its_own_request_id(env: Env):
    ids = {(await env.client.get("/v2.1/flavors", headers=ALICE)).headers["x-openstack-request-id"]
           for _ in range(3)}
    assert len(ids) == 3


async def test_the_request_id_is_bound_for_logging_while_the_request_runs(env: Env):
    seen: list[object] = []
    env.deps.servers.kick = lambda _id: seen.append(structlog.contextvars.get_contextvars().get("request_id"))
    r = await env.client.post("/v2.1/servers", json={"server": {
        "name": "x", "imageRef": str(env.cirros.uuid), "flavorRef": "1"}}, headers=ALICE)
    assert r.status_code == 202
    assert seen == [r.headers["x-openstack-request-id"]]
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_the_request_id_reaches_the_core_in_the_context(env: Env):
    seen: list[str] = []
    original = env.deps.servers.list

    def spy(ctx, query):
        seen.append(ctx.request_id)
        return original(ctx, query)

    env.deps.servers.list = spy
    r = await env.client.get("/v2.1/servers", headers=ALICE)
    assert seen == [r.headers["x-openstack-request-id"]]
