"""An agent in fleet mode (issue 12): its own API answers reads; every write is refused
with a 409 naming the controller, and changes nothing."""

from __future__ import annotations

import pytest

from agent.api.app import create_api
from tests.unit.api.conftest import ADMIN, ALICE, build_env, client_for, fault

CONTROLLER = "http://controller.example:8780"


@pytest.fixture
async def fleet():  # type: ignore[no-untyped-def]
    deps, store, images, kicked = build_env()
    deps.fleet_controller = CONTROLLER
    async with client_for(create_api(deps)) as client:
        yield client, store, images, kicked


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v2.1/servers", {"server": {"name": "vm", "imageRef": "x", "flavorRef": "1"}}),
    ("PUT", "/v2.1/servers/8d1c7f4e-0000-4000-8000-000000000001", {"server": {"name": "n"}}),
    ("DELETE", "/v2.1/servers/8d1c7f4e-0000-4000-8000-000000000001", None),
    ("POST", "/v2.1/servers/8d1c7f4e-0000-4000-8000-000000000001/action", {"os-stop": None}),
    ("POST", "/v2.1/servers/8d1c7f4e-0000-4000-8000-000000000001/metadata", {"metadata": {}}),
    ("POST", "/v2.1/os-keypairs", {"keypair": {"name": "k"}}),
    ("POST", "/v2.0/ports", {"port": {"network_id": "x"}}),
    ("DELETE", "/v2.0/ports/8d1c7f4e-0000-4000-8000-000000000002", None),
])
async def test_a_write_is_refused_with_409_naming_the_controller_and_changes_nothing(
        fleet, method, path, body):
    client, store, _images, kicked = fleet
    r = await client.request(method, path, json=body, headers=ALICE)
    message = fault(r, 409, "conflictingRequest")
    assert CONTROLLER in message
    assert store.list_servers(include_deleted=True) == [] and kicked == []
    assert store.list_keypairs("alice") == []


async def test_reads_still_answer(fleet):
    client, _store, _images, _kicked = fleet
    for path in ("/v2.1/servers", "/v2.1/servers/detail", "/v2.1/flavors", "/v2.1/images",
                 "/v2.0/networks", "/metrics"):
        r = await client.get(path, headers=ADMIN if path == "/metrics" else ALICE)
        assert r.status_code == 200, (path, r.text)


async def test_without_a_token_a_write_is_still_401_first(fleet):
    client, *_ = fleet
    r = await client.post("/v2.1/servers", json={})
    assert r.status_code == 401


async def test_single_host_mode_accepts_writes():
    deps, store, images, _kicked = build_env()
    async with client_for(create_api(deps)) as client:
        r = await client.post("/v2.1/servers", headers=ALICE, json={"server": {
            "name": "vm", "imageRef": str(images.get("cirros").uuid), "flavorRef": "1"}})
    assert r.status_code == 202 and len(store.list_servers()) == 1
