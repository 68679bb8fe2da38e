"""What Nova 2.1 answers to the requests OpenStack users type every day, checked through
the API (issue 16, item 3). The status codes and messages are those of Nova's code
(servers.py, views/servers.py, ips.py, server_password.py, versions.py, wsgi.py,
schemas/servers.py, validation/parameter_types.py). Other answers of the same rules are
tested beside their routes (test_auth, test_servers_read, test_servers_update_delete,
test_networks_api, test_versions, test_personality)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from agent.api import models
from agent.model.states import VmState
from tests.unit.api.conftest import ADMIN, ALICE, BOB, HOST, TEST_NET, Env, fault

NET = str(TEST_NET.id)


def body_of(env: Env, **fields: Any) -> dict[str, Any]:
    return {"server": {"name": "vm", "imageRef": str(env.cirros.uuid), "flavorRef": "1", **fields}}


async def post(env: Env, body: dict[str, Any], headers: dict[str, str] = ALICE):
    return await env.client.post("/v2.1/servers", json=body, headers=headers)


async def show(env: Env, server_id: str, headers: dict[str, str] = ALICE) -> dict[str, Any]:
    r = await env.client.get(f"/v2.1/servers/{server_id}", headers=headers)
    assert r.status_code == 200, r.text
    models.ServerShow.model_validate(r.json())
    return r.json()["server"]


# -- create: what Nova's schema takes ---------------------------------------------------

async def test_flavor_ref_may_be_an_integer(env: Env):
    r = await post(env, body_of(env, flavorRef=2))
    assert r.status_code == 202, r.text
    assert (await show(env, r.json()["server"]["id"]))["flavor"]["id"] == "2"


async def test_resize_takes_an_integer_flavor_ref_too(env: Env):
    sid = await env.create_active()
    r = await env.client.post(f"/v2.1/servers/{sid}/action", json={"resize": {"flavorRef": 2}},
                              headers=ALICE)
    assert r.status_code == 202, r.text


async def test_scheduler_hints_are_accepted_and_stored_with_the_server(env: Env):
    group = await env.client.post("/v2.1/os-server-groups", headers=ALICE, json={
        "server_group": {"name": "g", "policies": ["anti-affinity"]}})
    hints = {"group": group.json()["server_group"]["id"], "same_host": ["a", "b"],
             "query": '["=", "$free_ram_mb", 1024]', "custom_hint": {"nested": [1, 2]}}
    r = await post(env, {**body_of(env), "os:scheduler_hints": hints})
    assert r.status_code == 202, r.text
    assert env.server(r.json()["server"]["id"]).scheduler_hints == hints
    r = await post(env, {**body_of(env), "OS-SCH-HNT:scheduler_hints": {"different_host": "x"}})
    assert env.server(r.json()["server"]["id"]).scheduler_hints == {"different_host": "x"}


async def test_a_scheduler_hint_of_the_wrong_type_is_refused(env: Env):
    r = await post(env, {**body_of(env), "os:scheduler_hints": {"same_host": 5}})
    assert "same_host" in fault(r, 400, "badRequest")
    assert env.store.list_servers() == []


@pytest.mark.parametrize("key", ["role", "a-b_c:d.e f", "K" * 255])
async def test_metadata_keys_of_nova_s_pattern_are_accepted(env: Env, key: str):
    assert (await post(env, body_of(env, metadata={key: "v"}))).status_code == 202


@pytest.mark.parametrize("key", ["a/b", "café", "semi;colon", "new\nline", "K" * 256])
async def test_metadata_keys_outside_nova_s_pattern_are_refused(env: Env, key: str):
    assert "metadata" in fault(await post(env, body_of(env, metadata={key: "v"})), 400, "badRequest")
    assert env.store.list_servers() == []


async def test_metadata_routes_apply_the_same_key_pattern(env: Env):
    sid = await env.create_active()
    r = await env.client.post(f"/v2.1/servers/{sid}/metadata", json={"metadata": {"a/b": "v"}},
                              headers=ALICE)
    assert "metadata" in fault(r, 400, "badRequest")
    assert env.server(sid).metadata == {}


async def test_user_data_must_be_base64_of_at_most_65535_characters(env: Env):
    fine = base64.encodebytes(b"#cloud-config\n" * 100).decode()  # line-wrapped, as MIME
    assert (await post(env, body_of(env, user_data=fine))).status_code == 202
    longest = "A" * 65532 + "AAA="
    assert len(longest) == 65536
    message = fault(await post(env, body_of(env, user_data=longest)), 400, "badRequest")
    assert "user_data" in message and "AAAA" not in message
    message = fault(await post(env, body_of(env, user_data="abc")), 400, "badRequest")  # padding
    assert "user_data" in message and "abc" not in message
    assert len(env.store.list_servers()) == 1


@pytest.mark.parametrize("value", [True, False, "true", "False", "1", "0", "yes", "NO", "on", "Off"])
async def test_config_drive_takes_nova_s_boolean_spellings(env: Env, value: Any):
    assert (await post(env, body_of(env, config_drive=value))).status_code == 202


@pytest.mark.parametrize("value", ["", "y", "maybe", 1, 0, "none"])
async def test_config_drive_refuses_anything_else(env: Env, value: Any):
    assert "config_drive" in fault(await post(env, body_of(env, config_drive=value)), 400, "badRequest")


@pytest.mark.parametrize("name", [
    "zero\u200bwidth", "\ufeffbom", "joiner\u200d", "line\u2028separator", "ctl\x7f", "nul\x00",
    "\u00a0leading nbsp", "trailing nbsp\u00a0", "\u3000ideographic space",
])
async def test_names_with_control_format_or_edge_whitespace_characters_are_refused(env: Env, name: str):
    message = fault(await post(env, body_of(env, name=name)), 400, "badRequest")
    assert "name" in message
    assert env.store.list_servers() == []


@pytest.mark.parametrize("name", ["web 1", "caf\u00e9", "\u6f22\u5b57", "emoji \U0001f600", "a\u00a0b"])
async def test_names_of_printable_characters_are_accepted(env: Env, name: str):
    r = await post(env, body_of(env, name=name))
    assert r.status_code == 202, r.text


async def test_a_bad_name_is_refused_on_update_and_rebuild_too(env: Env):
    sid = await env.create_active(name="ok")
    r = await env.client.put(f"/v2.1/servers/{sid}", json={"server": {"name": "a\u200bb"}},
                             headers=ALICE)
    fault(r, 400, "badRequest")
    r = await env.client.post(f"/v2.1/servers/{sid}/action", headers=ALICE, json={
        "rebuild": {"imageRef": str(env.cirros.uuid), "name": "a\u200bb"}})
    fault(r, 400, "badRequest")
    assert env.server(sid).name == "ok"


async def test_personality_in_line_wrapped_base64_is_accepted(env: Env):
    wrapped = base64.encodebytes(("hello world " * 40).encode()).decode()
    assert "\n" in wrapped.strip()
    r = await post(env, body_of(env, personality=[{"path": "/etc/motd", "contents": wrapped}]))
    assert r.status_code == 202, r.text


# -- access addresses ---------------------------------------------------------------------

async def test_ipv6_access_addresses_are_shown_in_canonical_form(env: Env):
    r = await post(env, body_of(env, accessIPv6="2001:0DB8:0000:0000:0000:0000:0000:0001"))
    sid = r.json()["server"]["id"]
    assert (await show(env, sid))["accessIPv6"] == "2001:db8::1"
    r = await env.client.put(f"/v2.1/servers/{sid}", headers=ALICE,
                             json={"server": {"accessIPv6": "fe80:0:0:0:0:0:0:00ab"}})
    assert r.json()["server"]["accessIPv6"] == "fe80::ab"


@pytest.mark.parametrize("field", ["accessIPv4", "accessIPv6"])
async def test_an_empty_access_address_is_refused_as_nova_s_schema_does(env: Env, field: str):
    assert field in fault(await post(env, body_of(env, **{field: ""})), 400, "badRequest")
    sid = await env.create_active(accessIPv4="192.0.2.1", accessIPv6="2001:db8::1")
    r = await env.client.put(f"/v2.1/servers/{sid}", json={"server": {field: ""}}, headers=ALICE)
    assert field in fault(r, 400, "badRequest")
    r = await env.client.post(f"/v2.1/servers/{sid}/action", headers=ALICE, json={
        "rebuild": {"imageRef": str(env.cirros.uuid), field: ""}})
    assert field in fault(r, 400, "badRequest")
    assert (env.server(sid).access_ipv4, env.server(sid).access_ipv6) == ("192.0.2.1", "2001:db8::1")


# -- views ---------------------------------------------------------------------------------

async def test_security_groups_echo_what_was_asked_and_are_shown_after(env: Env):
    asked = [{"name": "web"}, {"name": "ssh"}]
    r = await post(env, body_of(env, security_groups=asked))
    assert r.json()["server"]["security_groups"] == asked
    assert (await show(env, r.json()["server"]["id"]))["security_groups"] == asked
    r = await post(env, body_of(env))
    assert r.json()["server"]["security_groups"] == [{"name": "default"}]
    assert (await show(env, r.json()["server"]["id"]))["security_groups"] == [{"name": "default"}]


async def test_rebuild_answers_with_the_server_s_real_addresses(env: Env):
    r = await post(env, body_of(env, networks=[{"uuid": NET, "fixed_ip": "10.213.0.9"}]))
    sid = r.json()["server"]["id"]
    await env.set_state(sid, VmState.ACTIVE)
    r = await env.client.post(f"/v2.1/servers/{sid}/action", headers=ALICE,
                              json={"rebuild": {"imageRef": str(env.cirros.uuid)}})
    assert r.status_code == 202, r.text
    # As Nova's rebuild (and update) answer: version and addr, no OS-EXT-IPS attributes.
    assert r.json()["server"]["addresses"] == {TEST_NET.name: [{"version": 4, "addr": "10.213.0.9"}]}
    assert [a["addr"] for a in (await show(env, sid))["addresses"][TEST_NET.name]] == ["10.213.0.9"]


ADMIN_KEYS = {"OS-EXT-SRV-ATTR:host", "OS-EXT-SRV-ATTR:hypervisor_hostname",
              "OS-EXT-SRV-ATTR:instance_name"}


async def test_admins_see_the_host_attributes_others_do_not(env: Env):
    sid = await env.create_active()
    await env.set_state(sid, VmState.ACTIVE, launched_at=datetime.now(UTC))
    assert not ADMIN_KEYS & set(await show(env, sid))
    seen = await show(env, sid, ADMIN)
    assert seen["OS-EXT-SRV-ATTR:host"] == HOST
    assert seen["OS-EXT-SRV-ATTR:hypervisor_hostname"] == HOST
    assert seen["OS-EXT-SRV-ATTR:instance_name"] == f"instance-{sid}"
    r = await env.client.get("/v2.1/servers/detail?all_tenants=1", headers=ADMIN)
    assert set(r.json()["servers"][0]) >= ADMIN_KEYS
    r = await env.client.get("/v2.1/servers/detail", headers=ALICE)
    assert not ADMIN_KEYS & set(r.json()["servers"][0])


async def test_host_id_and_host_are_empty_while_the_build_has_no_host(env: Env):
    sid = (await env.create())["id"]  # BUILD, its job not started
    assert (await show(env, sid))["hostId"] == ""
    assert (await show(env, sid, ADMIN))["OS-EXT-SRV-ATTR:host"] is None
    await env.set_state(sid, VmState.BUILDING, progress=20)  # the build took this host
    assert (await show(env, sid))["hostId"] == hashlib.sha224(f"p-alice{HOST}".encode()).hexdigest()
    assert (await show(env, sid, ADMIN))["OS-EXT-SRV-ATTR:host"] == HOST


# -- /ips and /os-server-password -----------------------------------------------------------

async def test_ips_lists_the_addresses_by_network_without_extended_attributes(env: Env):
    r = await post(env, body_of(env, networks=[{"uuid": NET, "fixed_ip": "10.213.0.11"}]))
    sid = r.json()["server"]["id"]
    r = await env.client.get(f"/v2.1/servers/{sid}/ips", headers=ALICE)
    assert r.status_code == 200
    assert r.json() == {"addresses": {TEST_NET.name: [{"version": 4, "addr": "10.213.0.11"}]}}
    r = await env.client.get(f"/v2.1/servers/{sid}/ips/{TEST_NET.name}", headers=ALICE)
    assert r.json() == {TEST_NET.name: [{"version": 4, "addr": "10.213.0.11"}]}


async def test_ips_of_a_network_the_server_is_not_on_is_not_found(env: Env):
    sid = (await post(env, body_of(env, networks="none"))).json()["server"]["id"]
    r = await env.client.get(f"/v2.1/servers/{sid}/ips", headers=ALICE)
    assert r.json() == {"addresses": {}}
    r = await env.client.get(f"/v2.1/servers/{sid}/ips/{TEST_NET.name}", headers=ALICE)
    assert fault(r, 404, "itemNotFound") == "Instance is not a member of specified network"


async def test_server_password_is_empty_and_clearing_it_is_204(env: Env):
    sid = await env.create_active()
    r = await env.client.get(f"/v2.1/servers/{sid}/os-server-password", headers=ALICE)
    assert r.status_code == 200 and r.json() == {"password": ""}
    r = await env.client.delete(f"/v2.1/servers/{sid}/os-server-password", headers=ALICE)
    assert r.status_code == 204 and r.content == b""


@pytest.mark.parametrize("path", ["/ips", f"/ips/{TEST_NET.name}", "/os-server-password"])
async def test_another_project_s_or_a_deleted_server_s_ips_and_password_are_not_found(env: Env,
                                                                                     path: str):
    sid = await env.create_active()
    fault(await env.client.get(f"/v2.1/servers/{sid}{path}", headers=BOB), 404, "itemNotFound")
    await env.set_state(sid, VmState.DELETED)
    fault(await env.client.get(f"/v2.1/servers/{sid}{path}", headers=ALICE), 404, "itemNotFound")


async def test_host_id_is_the_placed_hosts_hashed_per_project_as_in_a_fleet(env: Env):
    """Issue 12: a server placed by the controller shows its placed host's hostId at once;
    two hosts differ, one host is the same for one project, another project's differs."""
    a1, a2 = (await env.create())["id"], (await env.create())["id"]
    b1 = (await env.create(BOB))["id"]
    for sid, host in ((a1, "hv1"), (a2, "hv2"), (b1, "hv1")):
        await env.store.update_server(UUID(sid), {"host": host}, cause="placed")
    ids = {sid: (await show(env, sid, BOB if sid == b1 else ALICE))["hostId"] for sid in (a1, a2, b1)}
    assert ids[a1] == hashlib.sha224(b"p-alicehv1").hexdigest()
    assert ids[a1] != ids[a2] and ids[a1] != ids[b1]
    assert (await show(env, a2, ADMIN))["OS-EXT-SRV-ATTR:host"] == "hv2"
    a3 = (await env.create_active())  # (the quota of 3 allows one more for alice)
    await env.store.update_server(UUID(a3), {"host": "hv1"}, cause="placed")
    assert (await show(env, a3))["hostId"] == ids[a1]
