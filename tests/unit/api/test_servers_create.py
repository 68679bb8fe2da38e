"""POST /servers: the 202 answer, the body schema, the rules, quotas, and the password."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agent.model.states import VmState
from tests.unit.api.conftest import ALICE, BOB, Env, fault


def server_body(env: Env, **fields: Any) -> dict[str, Any]:
    return {"server": {"name": "web-1", "imageRef": str(env.cirros.uuid), "flavorRef": "1", **fields}}


async def post(env: Env, body: Any, headers: dict[str, str] = ALICE):
    return await env.client.post("/v2.1/servers", json=body, headers=headers)


async def test_create_answers_202_with_id_links_password_and_location(env: Env):
    r = await post(env, server_body(env))
    assert r.status_code == 202
    server = r.json()["server"]
    assert set(server) == {"id", "links", "adminPass", "OS-DCF:diskConfig", "security_groups"}
    sid = server["id"]
    assert server["links"] == [
        {"rel": "self", "href": f"http://test/v2.1/servers/{sid}"},
        {"rel": "bookmark", "href": f"http://test/servers/{sid}"},
    ]
    assert r.headers["Location"] == f"http://test/v2.1/servers/{sid}"
    assert server["OS-DCF:diskConfig"] == "MANUAL"
    assert server["security_groups"] == [{"name": "default"}]
    assert len(server["adminPass"]) >= 8


async def test_create_commits_the_server_and_kicks_its_job(env: Env):
    r = await post(env, server_body(env, metadata={"role": "web"}, accessIPv4="192.0.2.10",
                                    accessIPv6="2001:db8::10", shutdown_terminate=True))
    server = env.server(r.json()["server"]["id"])
    assert server.vm_state is VmState.BUILDING
    assert server.name == "web-1"
    assert server.image_id == env.cirros.uuid
    assert server.flavor_id == "1"
    assert server.metadata == {"role": "web"}
    assert (server.access_ipv4, server.access_ipv6) == ("192.0.2.10", "2001:db8::10")
    assert server.shutdown_terminate is True
    assert env.kicked == [server.id]


async def test_a_given_admin_password_is_returned_as_given(env: Env):
    r = await post(env, server_body(env, adminPass="Given-Passw0rd"))
    assert r.json()["server"]["adminPass"] == "Given-Passw0rd"


@pytest.mark.parametrize("given", [None, "Given-Passw0rd-123"])
async def test_the_admin_password_is_never_shown_again(env: Env, given: str | None):
    extra = {"adminPass": given} if given else {}
    r = await post(env, server_body(env, metadata={"a": "b"}, **extra))
    password = r.json()["server"]["adminPass"]
    sid = r.json()["server"]["id"]
    await env.set_state(sid, VmState.ACTIVE)
    later = [
        await env.client.get(f"/v2.1/servers/{sid}", headers=ALICE),
        await env.client.get("/v2.1/servers", headers=ALICE),
        await env.client.get("/v2.1/servers/detail", headers=ALICE),
        await env.client.get("/v2.1/servers/detail?changes-since=2000-01-01T00:00:00Z", headers=ALICE),
        await env.client.get(f"/v2.1/servers/{sid}/metadata", headers=ALICE),
        await env.client.put(f"/v2.1/servers/{sid}", json={"server": {"name": "renamed"}}, headers=ALICE),
        await env.client.get("/v2.1/limits", headers=ALICE),
    ]
    for response in later:
        assert response.status_code == 200, response.text
        assert password not in response.text
    assert password not in repr(env.server(sid))


async def test_image_and_flavor_may_be_given_as_urls(env: Env):
    r = await post(env, server_body(env, imageRef=f"http://test/images/{env.cirros.uuid}",
                                    flavorRef="http://test/flavors/2"))
    assert r.status_code == 202
    assert env.server(r.json()["server"]["id"]).flavor_id == "2"


@pytest.mark.parametrize("extra", [
    {"networks": "auto"},
    {"networks": "none"},
    {"networks": []},
    {"min_count": 1, "max_count": 1},
    {"min_count": "1"},
    {"OS-DCF:diskConfig": "AUTO"},
    {"OS-DCF:diskConfig": "MANUAL"},
    {"config_drive": True},
    {"config_drive": "false"},
    {"user_data": base64.b64encode(b"#cloud-config\n").decode()},
    {"availability_zone": "nova"},
    {"security_groups": [{"name": "default"}]},
    {"key_name": None},
    {"accessIPv6": "2001:db8::1"},
    {"metadata": {}},
    {"flavorRef": 1},
])
async def test_accepted_and_ignored_fields(env: Env, extra: dict[str, Any]):
    r = await post(env, server_body(env, **extra))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(("fields", "named"), [
    ({"name": None}, "name"),
    ({"name": 5}, "name"),
    ({"name": ""}, "name"),
    ({"name": "  padded "}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"name": "tab\there"}, "name"),
    ({"imageRef": 7}, "imageRef"),
    ({"imageRef": "no-such-image"}, "imageRef"),
    ({"flavorRef": "99"}, "flavorRef"),
    ({"flavorRef": ""}, "flavorRef"),
    ({"metadata": "role=web"}, "metadata"),
    ({"metadata": {"role": 1}}, "metadata"),
    ({"metadata": {"": "empty key"}}, "metadata"),
    ({"metadata": {"k" * 256: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 256}}, "metadata"),
    ({"metadata": {"k": "é" * 200}}, "metadata"),  # 400 bytes, though 200 characters
    ({"accessIPv4": "1.2.3"}, "accessIPv4"),
    ({"accessIPv4": "2001:db8::1"}, "accessIPv4"),
    ({"accessIPv6": "192.0.2.1"}, "accessIPv6"),
    ({"networks": "bad"}, "networks"),
    ({"networks": [{"uuid": "6e7f4a6c-6b2a-4d1e-9d8e-2b9d3c4f5a61"}]}, "networks"),
    ({"networks": [{"nope": 1}]}, "nope"),
    ({"min_count": 3, "max_count": 2}, "min_count"),
    ({"min_count": 0}, "min_count"),
    ({"max_count": 1.5}, "max_count"),
    ({"max_count": "many"}, "max_count"),
    ({"OS-DCF:diskConfig": "SOMETIMES"}, "OS-DCF:diskConfig"),
    ({"shutdown_terminate": "maybe"}, "shutdown_terminate"),
    ({"security_groups": [{}]}, "name"),
    ({"personality": [{"path": "/etc/motd"}]}, "contents"),
    ({"personality": [{"path": "/etc/motd", "contents": "aGk=", "mode": "0644"}]}, "mode"),
    ({"personality": [{"path": "etc/motd", "contents": "aGk="}]}, "personality[0].path"),
    ({"personality": [{"path": "/etc/motd", "contents": "aGk"}]}, "contents"),
    ({"description": "2.19+ only"}, "description"),
    ({"block_device_mapping_v2": []}, "block_device_mapping_v2"),
])
async def test_invalid_fields_are_bad_requests_naming_the_field(env: Env, fields: dict[str, Any], named: str):
    r = await post(env, server_body(env, **fields))
    assert named in fault(r, 400, "badRequest")
    assert env.store.list_servers() == []
    assert env.kicked == []


@pytest.mark.parametrize("missing", ["name", "imageRef", "flavorRef"])
async def test_required_fields_are_named_when_missing(env: Env, missing: str):
    body = server_body(env)
    del body["server"][missing]
    assert fault(await post(env, body), 400, "badRequest") == f"'{missing}' is a required property"


async def test_unknown_keys_are_refused_as_nova_words_it(env: Env):
    r = await post(env, server_body(env, colour="blue"))
    assert fault(r, 400, "badRequest") == "Additional properties are not allowed ('colour' was unexpected)"
    r = await post(env, {**server_body(env), "scheduler_hints": {}})
    assert "'scheduler_hints' was unexpected" in fault(r, 400, "badRequest")


async def test_a_key_name_is_refused_as_nova_refuses_an_unknown_key(env: Env):
    r = await post(env, server_body(env, key_name="my-key"))
    assert "Invalid key_name provided." in fault(r, 400, "badRequest")


async def test_a_flavor_too_small_for_the_image_is_refused(env: Env):
    r = await post(env, server_body(env, imageRef=str(env.big.uuid), flavorRef="1"))
    assert "flavorRef" in fault(r, 400, "badRequest")
    r = await post(env, server_body(env, imageRef=str(env.big.uuid), flavorRef="2"))
    assert "memory is too small" in fault(r, 400, "badRequest")


@pytest.mark.parametrize("body", [{"server": "x"}, {"server": None}, [], "server", 5, None, {}])
async def test_a_body_of_the_wrong_shape_is_a_bad_request(env: Env, body: Any):
    fault(await post(env, body), 400, "badRequest")


@pytest.mark.parametrize("raw", [b"{", b"{'server': {}}", b"\xff\xfe\x00", b""])
async def test_malformed_json_is_a_bad_request(env: Env, raw: bytes):
    r = await env.client.post("/v2.1/servers", content=raw, headers=ALICE)
    assert fault(r, 400, "badRequest") == "Malformed request body"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_the_body_is_read_as_json_whatever_the_content_type(env: Env, content_type: str | None):
    headers = {**ALICE, **({"Content-Type": content_type} if content_type else {})}
    r = await env.client.post("/v2.1/servers", content=json.dumps(server_body(env)).encode(),
                              headers=headers)
    assert r.status_code == 202, r.text


async def test_secret_values_are_never_echoed_in_errors(env: Env):
    secret = "Hunter2-Secret-Value"
    secret_b64 = base64.b64encode(secret.encode()).decode()
    bodies = [
        server_body(env, adminPass=[secret]),
        server_body(env, adminPass={"v": secret}),
        server_body(env, adminPass=secret, bogus=1),
        {"server": {"adminPass": secret, "imageRef": str(env.cirros.uuid), "flavorRef": "1"}},
        server_body(env, personality=[{"path": "/x", "contents": f"{secret}!!"}]),
        server_body(env, personality=[{"path": "/x", "contents": secret_b64},
                                      {"path": "/../x", "contents": secret_b64}]),
        server_body(env, personality=[{"path": "/x", "contents": base64.b64encode(
            b"\x1f\x8b" + secret.encode()).decode()}]),
        server_body(env, personality=[{"path": "/x", "contents": secret_b64, "extra": 1}]),
        server_body(env, personality=[secret]),
        server_body(env, personality=secret),
        server_body(env, user_data=[secret]),
        server_body(env, adminPass=secret, name=""),
    ]
    for body in bodies:
        r = await post(env, body)
        assert r.status_code == 400, r.text
        assert secret not in r.text
        assert secret_b64 not in r.text


async def test_the_instance_quota_is_a_forbidden(env: Env):
    for _ in range(3):
        await env.create()
    r = await post(env, server_body(env))
    assert "Quota exceeded for instances" in fault(r, 403, "forbidden")
    assert len(env.store.list_servers()) == 3
    # Another project has its own quota.
    assert (await post(env, server_body(env), headers=BOB)).status_code == 202


async def test_the_metadata_quota_is_a_forbidden(env: Env):
    r = await post(env, server_body(env, metadata={f"k{i}": "v" for i in range(6)}))
    assert "maxServerMeta" in fault(r, 403, "forbidden")


async def test_more_personality_files_than_allowed_is_a_forbidden(env: Env):
    files = [{"path": f"/f{i}", "contents": "aGk="} for i in range(3)]
    r = await post(env, server_body(env, personality=files))
    assert "maxPersonality" in fault(r, 403, "forbidden")


async def test_a_body_larger_than_the_limit_is_refused_before_it_is_parsed(env: Env):
    raw = json.dumps(server_body(env)).encode()
    too_big = raw + b" " * (env.deps.max_body_bytes - len(raw) + 1)
    r = await env.client.post("/v2.1/servers", content=too_big, headers=ALICE)
    assert fault(r, 413, "overLimit") == "Request is too large."
    assert env.store.list_servers() == []


async def test_a_body_of_exactly_the_limit_is_accepted(env: Env):
    raw = json.dumps(server_body(env)).encode()
    exact = raw + b" " * (env.deps.max_body_bytes - len(raw))
    r = await env.client.post("/v2.1/servers", content=exact, headers=ALICE)
    assert r.status_code == 202, r.text


async def test_a_chunked_body_is_counted_while_it_is_read(env: Env):
    chunk = b" " * 16384

    async def stream():
        yield json.dumps(server_body(env)).encode()
        for _ in range(10):
            yield chunk

    r = await env.client.post("/v2.1/servers", content=stream(), headers=ALICE)
    assert "content-length" not in r.request.headers
    fault(r, 413, "overLimit")
    assert env.store.list_servers() == []


async def test_a_declared_length_over_the_limit_is_refused_without_reading(env: Env):
    # The declared length alone decides: the body is never read.
    r = await env.client.post("/v2.1/servers", content=b"x" * 10,
                              headers={**ALICE, "Content-Length": str(env.deps.max_body_bytes + 1)})
    fault(r, 413, "overLimit")
