"""Fault bodies for errors that are not about one route's rules."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.api.errors import validation_message
from agent.errors import HypervisorUnavailable, StoreError
from tests.unit.api.conftest import ALICE, Env, fault


@pytest.mark.parametrize("path", ["/v2.1/nothing", "/v2.1/servers/a/b/c/d", "/v3/servers",
                                  "/v2.1/os-cells"])
async def test_an_unknown_route_is_not_found(env: Env, path: str):
    r = await env.client.get(path, headers=ALICE)
    assert fault(r, 404, "itemNotFound") == "The resource could not be found."


async def test_a_trailing_slash_is_not_redirected(env: Env):
    r = await env.client.get("/v2.1/servers/", headers=ALICE)
    fault(r, 404, "itemNotFound")


async def test_an_unsupported_method_is_a_bad_method(env: Env):
    r = await env.client.patch("/v2.1/servers", headers=ALICE)
    assert "PATCH" in fault(r, 405, "badMethod")
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


async def test_an_unexpected_error_is_a_generic_compute_fault(env: Env, monkeypatch: pytest.MonkeyPatch):
    def explode(*args: Any, **kwargs: Any):
        raise RuntimeError("internal detail /var/lib/secret-path")

    monkeypatch.setattr(env.deps.servers, "create_many", explode)
    with capture_logs() as logs:
        r = await env.client.post("/v2.1/servers", headers=ALICE, json={"server": {
            "name": "x", "imageRef": str(env.cirros.uuid), "flavorRef": "1", "adminPass": "Pw-Secret-77"}})
    message = fault(r, 500, "computeFault")
    assert r.headers["x-openstack-request-id"] in message
    for leak in ("internal detail", "secret-path", "Traceback", "RuntimeError", "Pw-Secret-77"):
        assert leak not in r.text
    assert any(e["event"] == "api.unexpected_error" for e in logs)


async def test_an_unexpected_agent_error_is_a_generic_compute_fault(env: Env,
                                                                    monkeypatch: pytest.MonkeyPatch):
    def down(*args: Any, **kwargs: Any):
        raise HypervisorUnavailable("libvirt at qemu+unix:///system?socket=/x is down")

    monkeypatch.setattr(env.deps.servers, "list", down)
    r = await env.client.get("/v2.1/servers", headers=ALICE)
    message = fault(r, 500, "computeFault")
    assert "libvirt" not in message


async def test_an_unavailable_store_is_a_service_unavailable(env: Env):
    env.store.close()
    r = await env.client.get("/v2.1/servers", headers=ALICE)
    assert "store is unavailable" in fault(r, 503, "serviceUnavailable")


async def test_store_error_details_are_not_shown(env: Env, monkeypatch: pytest.MonkeyPatch):
    def broken(*args: Any, **kwargs: Any):
        raise StoreError("state database /var/lib/compute-agent/state.db: disk I/O error")

    monkeypatch.setattr(env.store, "flavor_counts", broken)
    r = await env.client.get("/v2.1/limits", headers=ALICE)
    assert "state.db" not in fault(r, 503, "serviceUnavailable")


async def test_a_full_store_says_the_host_is_out_of_disk_space(env: Env,
                                                               monkeypatch: pytest.MonkeyPatch):
    def full(*args: Any, **kwargs: Any):
        raise StoreError("state database: add server failed: database or disk is full")

    monkeypatch.setattr(env.store, "flavor_counts", full)
    r = await env.client.get("/v2.1/limits", headers=ALICE)
    message = fault(r, 503, "serviceUnavailable")
    assert "out of disk space" in message and "database" not in message


@pytest.mark.parametrize(("error", "expected"), [
    ({"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error", "input": {}},
     "Malformed request body"),
    ({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}, "Malformed request body"),
    ({"type": "missing", "loc": ("body", "server", "name"), "msg": "Field required", "input": {}},
     "'name' is a required property"),
    ({"type": "extra_forbidden", "loc": ("body", "server", "x"), "msg": "Extra", "input": "secret"},
     "Additional properties are not allowed ('x' was unexpected)"),
    ({"type": "string_type", "loc": ("body", "server", "name"), "msg": "Input should be a valid string",
      "input": 5}, "Invalid input for field/attribute name. Value: 5. Input should be a valid string"),
    ({"type": "int_parsing", "loc": ("query", "limit"), "msg": "Input should be a valid integer",
      "input": "x"}, "Invalid input for field/attribute limit. Value: x. Input should be a valid integer"),
    ({"type": "string_type", "loc": ("body", "server", "adminPass"), "msg": "bad", "input": "pw"},
     "Invalid input for field/attribute adminPass. bad"),
    ({"type": "value_error", "loc": ("body", "server", "personality", 0, "contents"), "msg": "bad",
      "input": "c"}, "Invalid input for field/attribute contents. bad"),
    ({"type": "model_type", "loc": ("body", "server"), "msg": "bad", "input": {"adminPass": "pw"}},
     "Invalid input for field/attribute server. bad"),
    ({"type": "string_too_long", "loc": ("body", "metadata", "k", "[key]"), "msg": "too long", "input": "k"},
     "Invalid input for field/attribute metadata. Value: k. too long"),
    ({"type": "literal_error", "loc": ("body", "server", "networks", "literal['auto','none']"),
      "msg": "bad", "input": "x"}, "Invalid input for field/attribute networks. Value: x. bad"),
    ({"type": "bool_type", "loc": ("body", "server", "config_drive", "bool"), "msg": "bad", "input": 5},
     "Invalid input for field/attribute config_drive. Value: 5. bad"),
])
def test_validation_messages_name_the_field_and_hide_secrets(error: dict[str, Any], expected: str):
    assert validation_message(error) == expected


def test_long_values_are_not_echoed():
    error = {"type": "string_too_long", "loc": ("body", "server", "name"), "msg": "too long",
             "input": "n" * 300}
    assert validation_message(error) == "Invalid input for field/attribute name. too long"
