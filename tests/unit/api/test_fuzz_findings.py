"""Found while fuzzing the API: inputs that made it answer 500 (each is a 400 now), and
statuses it sent that its OpenAPI document did not declare."""

from __future__ import annotations

import pytest

from agent.api import models
from tests.unit.api.conftest import ALICE, Env, fault


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00",
                                   "0001-01-01T00:00:00+23:59"])
async def test_a_changes_since_outside_the_utc_calendar_is_a_bad_request(env: Env, value: str):
    await env.create()
    for path in ("/v2.1/servers", "/v2.1/servers/detail", "/v2.1/p-alice/servers"):
        r = await env.client.get(path, params={"changes-since": value}, headers=ALICE)
        assert "changes-since" in fault(r, 400, "badRequest")


async def test_the_first_and_last_utc_instants_are_still_accepted(env: Env):
    sid = (await env.create())["id"]
    r = await env.client.get("/v2.1/servers", params={"changes-since": "0001-01-01T00:00:00Z"}, headers=ALICE)
    assert [s["id"] for s in r.json()["servers"]] == [sid]
    r = await env.client.get("/v2.1/servers", params={"changes-since": "9999-12-31T23:59:59Z"}, headers=ALICE)
    assert r.json() == {"servers": []}


def lone(body: str) -> bytes:
    """The body with LONE spelled as a JSON string of a lone UTF-16 surrogate (no text)."""
    return body.replace("LONE", '"\\ud800"').encode()


@pytest.mark.parametrize("server", [
    '{"name": LONE, "imageRef": "IMAGE", "flavorRef": "1"}',
    '{"name": "a", "imageRef": "IMAGE", "flavorRef": LONE}',
    '{"name": "a", "imageRef": "IMAGE", "flavorRef": "1", "adminPass": LONE}',
    '{"name": "a", "imageRef": "IMAGE", "flavorRef": "1", "accessIPv4": LONE}',
    '{"name": "a", "imageRef": "IMAGE", "flavorRef": "1", "metadata": {"k": LONE}}',
    '{"name": "a", "imageRef": "IMAGE", "flavorRef": "1", "bogus\\udc00": 1}',
])
async def test_a_create_body_with_a_lone_surrogate_is_malformed(env: Env, server: str):
    body = lone('{"server": SERVER}'.replace("SERVER", server).replace("IMAGE", str(env.cirros.uuid)))
    r = await env.client.post("/v2.1/servers", headers=ALICE, content=body)
    assert fault(r, 400, "badRequest") == "Malformed request body"
    assert env.store.list_servers("p-alice") == []


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "", '{"server": {"name": LONE}}'),
    ("PUT", "/metadata", '{"metadata": {"k": LONE}}'),
    ("POST", "/metadata", '{"metadata": {LONE: "v"}}'),
    ("PUT", "/metadata/k", '{"meta": {"k": LONE}}'),
])
async def test_an_update_body_with_a_lone_surrogate_is_malformed(env: Env, method: str, path: str, body: str):
    sid = await env.create_active(metadata={"k": "v"})
    r = await env.client.request(method, f"/v2.1/servers/{sid}{path}", headers=ALICE, content=lone(body))
    assert fault(r, 400, "badRequest") == "Malformed request body"
    assert env.server(sid).name == "vm"
    assert dict(env.server(sid).metadata) == {"k": "v"}


async def test_a_surrogate_pair_is_ordinary_text(env: Env):
    sid = await env.create_active()
    r = await env.client.put(f"/v2.1/servers/{sid}/metadata/k", headers=ALICE,
                             content=b'{"meta": {"k": "\\ud83d\\ude00"}}')
    assert r.status_code == 200, r.text
    assert r.json() == {"meta": {"k": "\U0001f600"}}


@pytest.mark.parametrize("path", ["/", "/v2.1", "/v2.1/"])
async def test_version_discovery_documents_the_body_checks_it_answers(env: Env, path: str):
    responses = (await env.client.get("/openapi.json")).json()["paths"][path]["get"]["responses"]
    assert {"200", "400", "413"} <= set(responses)
    r = await env.client.request("GET", path, content=b"x" * (env.deps.max_body_bytes + 1))
    fault(r, 413, "overLimit")
    models.OverLimit.model_validate(r.json())
    r = await env.client.request("GET", path, headers={"Content-Length": "abc"})
    fault(r, 400, "badRequest")
    models.BadRequest.model_validate(r.json())
