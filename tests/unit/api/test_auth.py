"""Who may ask: tokens, the local default context, and the project id in the URL."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from agent.api.app import create_api
from agent.api.auth import TokenInfo, authenticate
from agent.model.requests import RequestContext
from tests.unit.api.conftest import ADMIN, ALICE, BOB, Env, build_env, client_for, fault

KEYSTONE_401 = {"error": {"code": 401, "title": "Unauthorized",
                          "message": "The request you have made requires authentication."}}


@pytest.mark.parametrize("path", ["/v2.1/servers", "/v2.1/servers/detail", "/v2.1/flavors", "/v2.1/limits",
                                  "/v2.1/images", "/v2.1/p-alice/servers", "/v2.1/no-such-route"])
async def test_a_request_without_token_is_unauthorized(env: Env, path: str):
    r = await env.client.get(path)
    assert r.status_code == 401
    assert r.json() == KEYSTONE_401
    assert r.headers["WWW-Authenticate"].startswith("Keystone")


async def test_an_unknown_token_is_unauthorized_and_never_echoed(env: Env):
    token = "secret-token-9f8e7d"
    with capture_logs() as logs:
        r = await env.client.get("/v2.1/servers", headers={"X-Auth-Token": token})
    assert r.status_code == 401
    assert r.json() == KEYSTONE_401
    assert token not in r.text
    assert token not in str(r.headers)
    assert token not in repr(logs)


async def test_tokens_never_appear_in_logs(env: Env):
    with capture_logs() as logs:
        await env.client.get("/v2.1/servers", headers=ALICE)
        await env.client.get("/v2.1/servers/nope", headers=ALICE)
        await env.client.post("/v2.1/servers", content=b"{", headers=ALICE)
    assert logs, "requests are logged"
    assert "tok-alice" not in repr(logs)


async def test_unauthenticated_writes_change_nothing(env: Env):
    r = await env.client.post("/v2.1/servers", json={"server": {
        "name": "x", "imageRef": str(env.cirros.uuid), "flavorRef": "1"}})
    assert r.status_code == 401
    assert env.store.list_servers() == []


async def test_authentication_comes_before_body_parsing(env: Env):
    r = await env.client.post("/v2.1/servers", content=b"{not json")
    assert r.status_code == 401


async def test_a_project_id_in_the_url_is_accepted_when_it_is_the_tokens(env: Env):
    server_id = (await env.create())["id"]
    r = await env.client.get(f"/v2.1/p-alice/servers/{server_id}", headers=ALICE)
    assert r.status_code == 200
    assert r.json()["server"]["links"][0]["href"] == f"http://test/v2.1/p-alice/servers/{server_id}"
    assert r.json()["server"]["links"][1]["href"] == f"http://test/p-alice/servers/{server_id}"


@pytest.mark.parametrize("path", ["/v2.1/p-bob/servers", "/v2.1/p-bob/flavors", "/v2.1/p-bob/limits",
                                  "/v2.1/p-bob/servers/detail", "/v2.1/p-bob/images"])
async def test_another_projects_id_in_the_url_is_a_bad_request_as_in_nova(env: Env, path: str):
    r = await env.client.get(path, headers=ALICE)
    assert fault(r, 400, "badRequest") == ("Malformed request URL: URL's project_id 'p-bob' "
                                           "doesn't match Context's project_id 'p-alice'")


async def test_another_projects_id_in_the_url_is_refused_for_writes_too(env: Env):
    r = await env.client.post("/v2.1/p-bob/servers", headers=ALICE, json={"server": {
        "name": "x", "imageRef": str(env.cirros.uuid), "flavorRef": "1"}})
    fault(r, 400, "badRequest")
    assert env.store.list_servers() == []


async def test_an_admin_naming_another_project_in_the_url_is_refused_too_as_in_nova(env: Env):
    r = await env.client.get("/v2.1/p-bob/servers", headers=ADMIN)
    assert "URL's project_id 'p-bob'" in fault(r, 400, "badRequest")
    r = await env.client.get("/v2.1/p-admin/servers?all_tenants=1", headers=ADMIN)
    assert r.status_code == 200


async def test_created_servers_belong_to_the_tokens_project_and_user(env: Env):
    server_id = (await env.create(BOB))["id"]
    server = env.server(server_id)
    assert (server.project_id, server.user_id) == ("p-bob", "bob")


async def test_without_token_the_default_context_is_used_when_configured():
    local = RequestContext(project_id="local", user_id="operator", is_admin=True)
    deps, store, images, _ = build_env(default_context=local)
    async with client_for(create_api(deps)) as client:
        r = await client.post("/v2.1/servers", json={"server": {
            "name": "x", "imageRef": str(images.get("cirros").uuid), "flavorRef": "1"}})
        assert r.status_code == 202, r.text
        assert store.list_servers()[0].project_id == "local"
        # A token that is sent must still be a known one.
        r = await client.get("/v2.1/servers", headers={"X-Auth-Token": "wrong"})
        assert r.status_code == 401
        r = await client.get("/v2.1/servers", headers=BOB)
        assert r.status_code == 200
        assert r.json() == {"servers": []}


def test_authenticate_maps_tokens_to_contexts():
    tokens = {"t": TokenInfo(project_id="p", user_id="u", is_admin=True)}
    ctx = authenticate(tokens, None, "t", "req-1")
    assert ctx == RequestContext(project_id="p", user_id="u", is_admin=True, request_id="req-1")
    assert authenticate(tokens, None, "x", "req-1") is None
    assert authenticate(tokens, None, None, "req-1") is None
    assert authenticate(tokens, None, "", "req-1") is None
    default = RequestContext(project_id="d", user_id="d")
    assert authenticate(tokens, default, None, "req-2") == default.model_copy(update={"request_id": "req-2"})
    assert authenticate(tokens, default, "", "req-2") is None


def test_token_info_requires_project_and_user():
    with pytest.raises(ValueError):
        TokenInfo(project_id="", user_id="u")
