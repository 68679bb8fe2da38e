"""/servers/{id}/metadata and /servers/{id}/metadata/{key}."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from uuid import uuid4

import pytest

from agent.model.states import TaskState, VmState
from tests.unit.api.conftest import ALICE, BOB, Env, fault


def url(sid: str, key: str | None = None) -> str:
    base = f"/v2.1/servers/{sid}/metadata"
    return base if key is None else f"{base}/{quote(key, safe='')}"


async def test_metadata_round_trip(env: Env):
    sid = await env.create_active(metadata={"a": "1"})
    c = env.client

    r = await c.get(url(sid), headers=ALICE)
    assert (r.status_code, r.json()) == (200, {"metadata": {"a": "1"}})

    r = await c.post(url(sid), json={"metadata": {"b": "2", "a": "one"}}, headers=ALICE)
    assert (r.status_code, r.json()) == (200, {"metadata": {"a": "one", "b": "2"}})

    r = await c.put(url(sid), json={"metadata": {"c": "3"}}, headers=ALICE)
    assert (r.status_code, r.json()) == (200, {"metadata": {"c": "3"}})
    assert env.server(sid).metadata == {"c": "3"}

    r = await c.get(url(sid, "c"), headers=ALICE)
    assert (r.status_code, r.json()) == (200, {"meta": {"c": "3"}})

    r = await c.put(url(sid, "d"), json={"meta": {"d": "4"}}, headers=ALICE)
    assert (r.status_code, r.json()) == (200, {"meta": {"d": "4"}})
    assert env.server(sid).metadata == {"c": "3", "d": "4"}

    r = await c.delete(url(sid, "c"), headers=ALICE)
    assert (r.status_code, r.content) == (204, b"")
    assert env.server(sid).metadata == {"d": "4"}
    fault(await c.get(url(sid, "c"), headers=ALICE), 404, "itemNotFound")

    r = await c.put(url(sid), json={"metadata": {}}, headers=ALICE)
    assert (r.status_code, r.json()) == (200, {"metadata": {}})


async def test_keys_with_url_special_characters_round_trip(env: Env):
    sid = await env.create_active()
    key = "a key:with.odd-chars_"
    r = await env.client.put(url(sid, key), json={"meta": {key: "v"}}, headers=ALICE)
    assert r.status_code == 200, r.text
    r = await env.client.get(url(sid, key), headers=ALICE)
    assert r.json() == {"meta": {key: "v"}}


async def test_a_missing_item_is_not_found(env: Env):
    sid = await env.create_active()
    assert "Metadata item was not found" in fault(await env.client.get(url(sid, "x"), headers=ALICE),
                                                  404, "itemNotFound")
    fault(await env.client.delete(url(sid, "x"), headers=ALICE), 404, "itemNotFound")


async def test_an_item_whose_key_differs_from_the_url_is_a_mismatch(env: Env):
    sid = await env.create_active()
    r = await env.client.put(url(sid, "a"), json={"meta": {"b": "1"}}, headers=ALICE)
    assert "Request body and URI mismatch" in fault(r, 400, "badRequest")


async def test_an_item_body_with_several_items_is_refused(env: Env):
    sid = await env.create_active()
    r = await env.client.put(url(sid, "a"), json={"meta": {"a": "1", "b": "2"}}, headers=ALICE)
    assert "Request body contains too many items" in fault(r, 400, "badRequest")
    assert env.server(sid).metadata == {}


@pytest.mark.parametrize(("body", "named"), [
    ({"metadata": "x"}, "metadata"),
    ({"metadata": {"a": 1}}, "metadata"),
    ({"metadata": {"a": None}}, "metadata"),
    ({"metadata": {"": "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 256}}, "metadata"),
    ({"metadata": {}, "meta": {}}, "meta"),
    ({}, "metadata"),
])
async def test_invalid_metadata_bodies_are_bad_requests_naming_the_field(env: Env, body: Any, named: str):
    sid = await env.create_active(metadata={"keep": "me"})
    for method in ("post", "put"):
        r = await getattr(env.client, method)(url(sid), json=body, headers=ALICE)
        assert named in fault(r, 400, "badRequest")
    assert env.server(sid).metadata == {"keep": "me"}


async def test_an_item_body_must_be_meta(env: Env):
    sid = await env.create_active()
    r = await env.client.put(url(sid, "a"), json={"metadata": {"a": "1"}}, headers=ALICE)
    assert fault(r, 400, "badRequest") == "'meta' is a required property"


async def test_more_items_than_the_quota_is_a_forbidden(env: Env):
    sid = await env.create_active(metadata={f"k{i}": "v" for i in range(5)})
    r = await env.client.post(url(sid), json={"metadata": {"one-more": "v"}}, headers=ALICE)
    assert "maxServerMeta" in fault(r, 403, "forbidden")
    r = await env.client.put(url(sid, "one-more"), json={"meta": {"one-more": "v"}}, headers=ALICE)
    fault(r, 403, "forbidden")
    # Replacing with as many is fine.
    r = await env.client.put(url(sid), json={"metadata": {f"n{i}": "v" for i in range(5)}}, headers=ALICE)
    assert r.status_code == 200


async def test_metadata_changes_conflict_while_the_server_builds(env: Env):
    sid = (await env.create())["id"]
    r = await env.client.post(url(sid), json={"metadata": {"a": "b"}}, headers=ALICE)
    assert "status BUILD" in fault(r, 409, "conflictingRequest")
    r = await env.client.put(url(sid, "a"), json={"meta": {"a": "b"}}, headers=ALICE)
    fault(r, 409, "conflictingRequest")


async def test_metadata_changes_conflict_while_a_task_runs(env: Env):
    sid = await env.create_active(metadata={"a": "b"})
    await env.set_state(sid, VmState.ACTIVE, TaskState.REBOOTING)
    r = await env.client.delete(url(sid, "a"), headers=ALICE)
    assert "status REBOOT" in fault(r, 409, "conflictingRequest")
    assert env.server(sid).metadata == {"a": "b"}
    # Reading is fine.
    assert (await env.client.get(url(sid), headers=ALICE)).status_code == 200


async def test_metadata_of_a_deleted_server_is_not_found(env: Env):
    sid = await env.create_active()
    await env.set_state(sid, VmState.DELETED)
    for r in [await env.client.get(url(sid), headers=ALICE),
              await env.client.post(url(sid), json={"metadata": {"a": "b"}}, headers=ALICE),
              await env.client.delete(url(sid, "a"), headers=ALICE)]:
        fault(r, 404, "itemNotFound")


async def test_metadata_of_another_projects_server_is_not_found(env: Env):
    sid = await env.create_active(metadata={"a": "b"})
    missing = str(uuid4())
    for path, other in ((url(sid), url(missing)), (url(sid, "a"), url(missing, "a"))):
        theirs = await env.client.get(path, headers=BOB)
        nothing = await env.client.get(other, headers=BOB)
        fault(theirs, 404, "itemNotFound")
        assert theirs.text == nothing.text.replace(missing, sid)
    r = await env.client.post(url(sid), json={"metadata": {"x": "y"}}, headers=BOB)
    fault(r, 404, "itemNotFound")
    assert env.server(sid).metadata == {"a": "b"}
