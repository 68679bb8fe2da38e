"""The OpenAPI document is served and honest: every route is in it, and every response
body the API sends validates against the model documented for it (the models forbid
extra keys, so a body with an undocumented field fails too)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from agent.api import models, models_catalog
from agent.api.app import COMPUTE_ROUTERS, NETWORK_PREFIX, NETWORK_ROUTERS
from agent.api.routing import ApiRoute
from agent.api.versions import router as versions_router
from agent.model.server import Fault
from agent.model.states import VmState
from tests.unit.api.conftest import ALICE, Env

METHODS = {"get", "put", "post", "delete", "patch"}


async def openapi(env: Env) -> dict[str, Any]:
    r = await env.client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


async def test_the_document_is_served_without_authentication(env: Env):
    doc = await openapi(env)
    assert doc["info"]["version"] == "2.1"
    assert doc["components"]["securitySchemes"]["KeystoneToken"] == {
        "type": "apiKey", "in": "header", "name": "X-Auth-Token",
        "description": "A token of this host's configured tokens"}


async def test_every_route_is_documented_with_and_without_project_id(env: Env):
    doc = await openapi(env)
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops if method in METHODS}
    expected = {(r.path, m.lower()) for r in versions_router.routes for m in r.methods}
    for router in COMPUTE_ROUTERS:
        for route in router.routes:
            for method in route.methods:
                expected.add((f"/v2.1{route.path}", method.lower()))
                expected.add((f"/v2.1/{{project_id}}{route.path}", method.lower()))
    network = {(f"{NETWORK_PREFIX}{r.path}", m.lower()) for router in NETWORK_ROUTERS
               for r in router.routes for m in r.methods}
    assert documented == expected | network
    # new since 2.1's core: /ips, /os-server-password, /os-keypairs, /os-quota-sets, DELETE /images,
    # /os-server-groups (4)
    assert len(expected) == 3 + 2 * 36
    assert len(network) == 12


async def test_operations_have_unique_ids_declared_path_parameters_and_no_422(env: Env):
    doc = await openapi(env)
    ids = []
    for path, ops in doc["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            ids.append(op["operationId"])
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, (path, method)
            assert "422" not in op["responses"], (path, method)
            if path.startswith("/v2.1/") and path != "/v2.1/":
                assert op["security"] == [{"KeystoneToken": []}], (path, method)
                assert {"400", "401", "404", "default"} <= set(op["responses"]), (path, method)
    assert len(ids) == len(set(ids))


async def test_fault_responses_and_response_models_are_documented_but_not_built_for_serving(
        env: Env):
    """They serve the document only (every handler returns its own Response): the served
    routes (agent/api/routing.py) keep them as the decorator's keywords, never build a
    serialiser for them (issue 15: its memory), and the document, built on first request,
    still has them."""
    served = [r for r in env.app.routes if isinstance(r, ApiRoute)]
    assert len(served) > 40
    assert all("responses" in r.spec.options or r.spec.options.get("include_in_schema") is False
               for r in served)
    assert not any(hasattr(r, "response_field") for r in served)
    assert not models.ServerDetailIndex.__pydantic_complete__
    doc = await openapi(env)
    show = doc["paths"]["/v2.1/servers/{server_id}"]["get"]["responses"]
    assert show["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServerShow"}
    assert show["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ItemNotFound"}
    assert await openapi(env) == doc


async def test_secrets_are_documented_as_write_only(env: Env):
    schemas = (await openapi(env))["components"]["schemas"]
    admin_pass = schemas["ServerCreate"]["properties"]["adminPass"]["anyOf"][0]
    assert admin_pass == {"type": "string", "format": "password", "writeOnly": True}
    assert schemas["Personality"]["properties"]["contents"]["writeOnly"] is True
    assert schemas["ServerCreate"]["additionalProperties"] is False


def check(model: type[BaseModel], response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    model.model_validate(response.json())


@pytest.mark.parametrize("prefix", ["/v2.1", "/v2.1/p-alice"])
async def test_every_response_body_matches_its_documented_model(env: Env, prefix: str):
    c = env.client
    check(models.VersionList, await c.get("/"), 200)
    check(models.VersionShow, await c.get("/v2.1/"), 200)

    created = await c.post(f"{prefix}/servers", headers=ALICE, json={"server": {
        "name": "a", "imageRef": str(env.cirros.uuid), "flavorRef": "1", "metadata": {"k": "v"}}})
    check(models.CreatedServerShow, created, 202)
    sid = created.json()["server"]["id"]
    check(models.ServerShow, await c.get(f"{prefix}/servers/{sid}", headers=ALICE), 200)
    await env.set_state(sid, VmState.ERROR,
                        fault=Fault(code=500, message="boom", created=created_at(env, sid)))
    shown = await c.get(f"{prefix}/servers/{sid}", headers=ALICE)
    check(models.ServerShow, shown, 200)
    assert "fault" in shown.json()["server"]
    await env.set_state(sid, VmState.ACTIVE)
    await env.create()
    check(models.ServerIndex, await c.get(f"{prefix}/servers?limit=1", headers=ALICE), 200)
    check(models.ServerDetailIndex, await c.get(f"{prefix}/servers/detail?limit=1", headers=ALICE), 200)
    check(models.ServerShow, await c.put(f"{prefix}/servers/{sid}", headers=ALICE,
                                         json={"server": {"name": "b"}}), 200)
    meta = f"{prefix}/servers/{sid}/metadata"
    check(models.Metadata, await c.get(meta, headers=ALICE), 200)
    check(models.Metadata, await c.post(meta, headers=ALICE, json={"metadata": {"a": "1"}}), 200)
    check(models.Metadata, await c.put(meta, headers=ALICE, json={"metadata": {"a": "1"}}), 200)
    check(models.MetaItem, await c.get(f"{meta}/a", headers=ALICE), 200)
    check(models.MetaItem, await c.put(f"{meta}/a", headers=ALICE, json={"meta": {"a": "2"}}), 200)
    assert (await c.delete(f"{meta}/a", headers=ALICE)).status_code == 204

    check(models_catalog.FlavorIndex, await c.get(f"{prefix}/flavors", headers=ALICE), 200)
    check(models_catalog.FlavorDetailIndex, await c.get(f"{prefix}/flavors/detail", headers=ALICE), 200)
    check(models_catalog.FlavorShow, await c.get(f"{prefix}/flavors/1", headers=ALICE), 200)
    check(models_catalog.ImageIndex, await c.get(f"{prefix}/images", headers=ALICE), 200)
    check(models_catalog.ImageDetailIndex, await c.get(f"{prefix}/images/detail", headers=ALICE), 200)
    check(models_catalog.ImageShow, await c.get(f"{prefix}/images/{env.cirros.uuid}", headers=ALICE), 200)
    check(models_catalog.LimitsShow, await c.get(f"{prefix}/limits", headers=ALICE), 200)
    kp = f"{prefix}/os-keypairs"
    check(models.CreatedKeypairShow, await c.post(kp, headers=ALICE, json={"keypair": {"name": "k"}}), 200)
    check(models.CreatedKeypairShow, await c.post(kp, headers=ALICE, json={"keypair": {
        "name": "imported", "public_key": (await c.get(f"{kp}/k", headers=ALICE)).json()[
            "keypair"]["public_key"]}}), 200)
    check(models.KeypairIndex, await c.get(kp, headers=ALICE), 200)
    check(models.KeypairShow, await c.get(f"{kp}/k", headers=ALICE), 200)
    check(models.Conflict, await c.post(kp, headers=ALICE, json={"keypair": {"name": "k"}}), 409)
    assert (await c.delete(f"{kp}/imported", headers=ALICE)).status_code == 202

    check(models.BadRequest, await c.get(f"{prefix}/servers?limit=x", headers=ALICE), 400)
    check(models.Unauthorized, await c.get(f"{prefix}/servers"), 401)
    check(models.Forbidden, await c.post(f"{meta}", headers=ALICE,
                                         json={"metadata": {f"k{i}": "v" for i in range(9)}}), 403)
    check(models.ItemNotFound, await c.get(f"{prefix}/flavors/9", headers=ALICE), 404)
    check(models.ComputeFault, await c.get(f"{prefix}/flavors", headers={
        **ALICE, "OpenStack-API-Version": "compute 2.2"}), 406)
    await env.set_state(sid, VmState.BUILDING, None)
    check(models.Conflict, await c.post(meta, headers=ALICE, json={"metadata": {"a": "1"}}), 409)
    check(models.OverLimit, await c.post(f"{prefix}/servers", headers=ALICE, content=b" " * 200_000), 413)
    assert (await c.delete(f"{prefix}/servers/{sid}", headers=ALICE)).status_code == 204
    env.store.close()
    check(models.ServiceUnavailable, await c.get(f"{prefix}/servers", headers=ALICE), 503)


def created_at(env: Env, sid: str):
    return env.server(sid).created_at
