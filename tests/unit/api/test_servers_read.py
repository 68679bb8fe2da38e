"""GET /servers/{id}, GET /servers and /servers/detail: views, scoping, filters, pages."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest

from agent.model.domain import PowerState
from agent.model.server import Fault
from agent.model.states import TaskState, VmState
from tests.unit.api.conftest import ADMIN, ALICE, BOB, HOST, TEST_NET, Env, fault

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DETAIL_KEYS = {
    "id", "name", "status", "tenant_id", "user_id", "metadata", "hostId", "image", "flavor",
    "created", "updated", "addresses", "accessIPv4", "accessIPv6", "links", "progress",
    "OS-DCF:diskConfig", "OS-EXT-STS:vm_state", "OS-EXT-STS:task_state", "OS-EXT-STS:power_state",
    "OS-EXT-AZ:availability_zone", "OS-SRV-USG:launched_at", "OS-SRV-USG:terminated_at",
    "key_name", "config_drive", "security_groups", "os-extended-volumes:volumes_attached",
}


async def show(env: Env, server_id: str, headers: dict[str, str] = ALICE) -> httpx.Response:
    return await env.client.get(f"/v2.1/servers/{server_id}", headers=headers)


async def test_show_gives_the_full_view_of_a_building_server(env: Env):
    sid = (await env.create(name="web-1", metadata={"role": "web"}, accessIPv4="192.0.2.1"))["id"]
    r = await show(env, sid)
    assert r.status_code == 200
    s = r.json()["server"]
    assert set(s) == DETAIL_KEYS
    assert s["id"] == sid
    assert s["name"] == "web-1"
    assert s["status"] == "BUILD"
    assert (s["tenant_id"], s["user_id"]) == ("p-alice", "alice")
    assert s["metadata"] == {"role": "web"}
    assert s["image"] == {"id": str(env.cirros.uuid), "links": [
        {"rel": "bookmark", "href": f"http://test/images/{env.cirros.uuid}"}]}
    assert s["flavor"] == {"id": "1", "links": [{"rel": "bookmark", "href": "http://test/flavors/1"}]}
    assert ISO_Z.match(s["created"]) and ISO_Z.match(s["updated"])
    assert s["addresses"] == {}
    assert (s["accessIPv4"], s["accessIPv6"]) == ("192.0.2.1", "")
    assert s["links"] == [{"rel": "self", "href": f"http://test/v2.1/servers/{sid}"},
                          {"rel": "bookmark", "href": f"http://test/servers/{sid}"}]
    assert s["progress"] == 0
    assert s["OS-DCF:diskConfig"] == "MANUAL"
    assert s["OS-EXT-STS:vm_state"] == "building"
    assert s["OS-EXT-STS:task_state"] == "spawning"
    assert s["OS-EXT-STS:power_state"] == 0
    assert s["OS-EXT-AZ:availability_zone"] == "nova"
    assert s["OS-SRV-USG:launched_at"] is None
    assert s["OS-SRV-USG:terminated_at"] is None
    assert s["key_name"] is None
    assert s["config_drive"] == ""
    assert s["security_groups"] == [{"name": "default"}]
    assert s["os-extended-volumes:volumes_attached"] == []
    assert "adminPass" not in s and "fault" not in s


async def test_show_reflects_an_active_running_server(env: Env):
    sid = (await env.create())["id"]
    launched = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    await env.set_state(sid, VmState.ACTIVE, power_state=PowerState.RUNNING, progress=100,
                        launched_at=launched)
    s = (await show(env, sid)).json()["server"]
    assert s["status"] == "ACTIVE"
    assert s["OS-EXT-STS:vm_state"] == "active"
    assert s["OS-EXT-STS:task_state"] is None
    assert s["OS-EXT-STS:power_state"] == 1
    assert s["progress"] == 100
    assert s["OS-SRV-USG:launched_at"] == "2024-05-06T07:08:09.123456"


async def test_host_id_is_nova_s_hash_of_project_and_host(env: Env):
    alice_sid = await env.create_active()
    await env.set_state(alice_sid, VmState.ACTIVE, progress=20)
    bob_sid = (await env.create(BOB))["id"]
    await env.set_state(bob_sid, VmState.ACTIVE, launched_at=datetime.now(UTC))
    alice_host = (await show(env, alice_sid)).json()["server"]["hostId"]
    bob_host = (await show(env, bob_sid, BOB)).json()["server"]["hostId"]
    assert alice_host == hashlib.sha224(f"p-alice{HOST}".encode()).hexdigest()
    assert bob_host == hashlib.sha224(f"p-bob{HOST}".encode()).hexdigest()
    assert alice_host != bob_host


async def test_a_fault_is_shown_for_a_server_in_error(env: Env):
    sid = (await env.create())["id"]
    created = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    await env.set_state(sid, VmState.ERROR, fault=Fault(code=500, message="disk full", created=created))
    s = (await show(env, sid)).json()["server"]
    assert s["status"] == "ERROR"
    assert s["fault"] == {"code": 500, "message": "disk full", "created": "2024-01-02T03:04:05Z"}


async def test_a_fault_is_not_shown_once_the_server_is_healthy_again(env: Env):
    sid = (await env.create())["id"]
    await env.set_state(sid, VmState.ACTIVE, fault=Fault(code=500, message="old", created=datetime.now(UTC)))
    assert "fault" not in (await show(env, sid)).json()["server"]


async def test_show_of_an_unknown_server_is_not_found(env: Env):
    missing = str(uuid4())
    message = fault(await show(env, missing), 404, "itemNotFound")
    assert message == f"Instance {missing} could not be found."


async def test_show_of_a_malformed_id_is_not_found(env: Env):
    fault(await show(env, "not-a-uuid"), 404, "itemNotFound")


async def test_another_projects_server_looks_exactly_like_a_missing_one(env: Env):
    sid = (await env.create())["id"]
    theirs = await show(env, sid, BOB)
    missing_id = str(uuid4())
    missing = await show(env, missing_id, BOB)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text == missing.text.replace(missing_id, sid)
    for method in ("put", "delete"):
        kwargs = {"json": {"server": {"name": "x"}}} if method == "put" else {}
        r = await getattr(env.client, method)(f"/v2.1/servers/{sid}", headers=BOB, **kwargs)
        assert r.text == theirs.text


async def test_an_admin_sees_any_projects_server(env: Env):
    sid = (await env.create())["id"]
    r = await show(env, sid, ADMIN)
    assert r.status_code == 200
    assert r.json()["server"]["tenant_id"] == "p-alice"


async def test_a_deleted_server_is_not_found(env: Env):
    sid = (await env.create())["id"]
    await env.set_state(sid, VmState.DELETED)
    fault(await show(env, sid), 404, "itemNotFound")


async def test_list_gives_id_name_and_links_of_the_callers_servers_only(env: Env):
    mine = [(await env.create(name=f"a{i}"))["id"] for i in range(2)]
    await env.create(BOB, name="bobs")
    r = await env.client.get("/v2.1/servers", headers=ALICE)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["servers"]
    assert {s["id"] for s in body["servers"]} == set(mine)
    for s in body["servers"]:
        assert set(s) == {"id", "name", "links"}
        assert s["links"][0] == {"rel": "self", "href": f"http://test/v2.1/servers/{s['id']}"}


async def test_detail_lists_full_views_equal_to_show(env: Env):
    sid = (await env.create())["id"]
    r = await env.client.get("/v2.1/servers/detail", headers=ALICE)
    assert r.json()["servers"] == [(await show(env, sid)).json()["server"]]


async def test_detail_shows_each_change_made_since_an_earlier_list(env: Env):
    """Views rendered for an earlier list are never served stale: a change of the server
    (name, status, fault) or of its ports shows in the next list, as in a show."""
    sid = (await env.create(networks=[{"uuid": str(TEST_NET.id)}]))["id"]
    first = (await env.client.get("/v2.1/servers/detail", headers=ALICE)).json()["servers"][0]
    assert first["addresses"] and first["status"] == "BUILD"
    await env.set_state(sid, VmState.ERROR, fault=Fault(code=500, message="boom",
                                                  created=datetime.now(UTC)))
    await env.store.update_server(env.server(sid).id, {"name": "renamed"}, cause="test")
    await env.store.release_ports(sid)  # the ports change alone: the server's row does not
    r = await env.client.get("/v2.1/servers/detail", headers=ALICE)
    [now] = r.json()["servers"]
    assert (now["name"], now["status"], now["fault"]["message"]) == ("renamed", "ERROR", "boom")
    assert now["addresses"] == {}
    assert now == (await show(env, sid)).json()["server"]


async def test_the_index_answer_follows_a_rename(env: Env):
    """An answer kept for an unchanged store is not served after a change."""
    sid = (await env.create(name="before"))["id"]
    first = (await env.client.get("/v2.1/servers", headers=ALICE)).json()
    again = (await env.client.get("/v2.1/servers", headers=ALICE)).json()
    assert first == again and first["servers"][0]["name"] == "before"
    r = await env.client.put(f"/v2.1/servers/{sid}", headers=ALICE,
                             json={"server": {"name": "after"}})
    assert r.status_code == 200
    now = (await env.client.get("/v2.1/servers", headers=ALICE)).json()
    assert now["servers"][0]["name"] == "after"
    assert (await env.client.get("/v2.1/servers", headers=BOB)).json() == {"servers": []}


async def test_detail_links_follow_each_requests_url(env: Env):
    """The same server listed through two URLs links through each one's own."""
    sid = (await env.create())["id"]
    for path, prefix in (("/v2.1/servers/detail", "http://test/v2.1/servers/"),
                         ("/v2.1/p-alice/servers/detail", "http://test/v2.1/p-alice/servers/"),
                         ("/v2.1/servers/detail", "http://test/v2.1/servers/")):
        r = await env.client.get(path, headers=ALICE)
        assert r.json()["servers"][0]["links"][0]["href"] == prefix + sid


async def test_list_under_a_project_url_links_with_the_project(env: Env):
    sid = (await env.create())["id"]
    r = await env.client.get("/v2.1/p-alice/servers", headers=ALICE)
    assert r.json()["servers"][0]["links"][0]["href"] == f"http://test/v2.1/p-alice/servers/{sid}"


async def list_ids(env: Env, path: str = "/v2.1/servers", **params: str | list[str]) -> set[str]:
    r = await env.client.get(path, params=params, headers=ALICE)
    assert r.status_code == 200, r.text
    return {s["id"] for s in r.json()["servers"]}


async def test_filter_by_image(env: Env):
    small = (await env.create(flavorRef="3"))["id"]
    big = (await env.create(imageRef=str(env.big.uuid), flavorRef="3"))["id"]
    assert await list_ids(env, image=str(env.big.uuid)) == {big}
    assert await list_ids(env, image=f"http://test/images/{env.cirros.uuid}") == {small}
    assert await list_ids(env, image=str(uuid4())) == set()


async def test_filter_by_flavor(env: Env):
    one = (await env.create(flavorRef="1"))["id"]
    two = (await env.create(flavorRef="2"))["id"]
    assert await list_ids(env, flavor="1") == {one}
    assert await list_ids(env, "/v2.1/servers/detail", flavor="2") == {two}


async def test_filter_by_name_is_a_regular_expression(env: Env):
    web1 = (await env.create(name="web-1"))["id"]
    web2 = (await env.create(name="web-2"))["id"]
    db = (await env.create(name="db-web"))["id"]
    assert await list_ids(env, name="web") == {web1, web2, db}
    assert await list_ids(env, name="^web-") == {web1, web2}
    assert await list_ids(env, name=r"-\d$") == {web1, web2}


async def test_an_invalid_name_regex_is_a_bad_request(env: Env):
    r = await env.client.get("/v2.1/servers", params={"name": "web-("}, headers=ALICE)
    assert "name" in fault(r, 400, "badRequest")


@contextlib.contextmanager
def interrupted_after(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (the event loop's) thread after `seconds`: Python's
    regex engine checks for signals, so a backtracking match is cut short, not waited out."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still matching after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def test_a_catastrophic_backtracking_name_pattern_answers_at_once(env: Env):
    """A tenant's `^(a+)+$` against a name of 40 a's and a "!" takes a backtracking engine
    2**40 steps (the event loop, and every project's requests, frozen for days); a linear
    one answers at once, with the same matches. The deadline is only a generous bound."""
    evil = (await env.create(name="a" * 40 + "!"))["id"]
    with interrupted_after(20):
        assert await list_ids(env, name="^(a+)+$") == set()
        assert await list_ids(env, "/v2.1/servers/detail", name="^(a|aa)+$") == set()
        assert await list_ids(env, name="^(a+)+!$") == {evil}


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=!)", r"(?<!b)a", "x" * 1025])
async def test_name_patterns_that_need_backtracking_or_are_too_long_are_a_400(env: Env, pattern: str):
    await env.create(name="aa!")
    r = await env.client.get("/v2.1/servers", params={"name": pattern}, headers=ALICE)
    assert "name" in fault(r, 400, "badRequest")


async def test_filter_by_status_in_any_case(env: Env):
    building = (await env.create())["id"]
    active = await env.create_active()
    assert await list_ids(env, status="ACTIVE") == {active}
    assert await list_ids(env, status="build") == {building}
    assert await list_ids(env, status="SHUTOFF") == set()


@pytest.mark.parametrize("path", ["/v2.1/servers", "/v2.1/servers/detail"])
async def test_an_unknown_status_lists_nothing_as_nova_2_1_does(env: Env, path: str):
    await env.create_active()
    r = await env.client.get(path, params={"status": "bogus"}, headers=ALICE)
    assert r.status_code == 200, r.text
    assert r.json() == {"servers": []}


async def test_an_unknown_status_beside_a_known_one_is_ignored(env: Env):
    active = await env.create_active()
    await env.create()
    assert await list_ids(env, status=["bogus", "active"]) == {active}


async def test_status_deleted_is_for_admins_only(env: Env):
    gone = await env.create_active()
    await env.set_state(gone, VmState.DELETED)
    r = await env.client.get("/v2.1/servers/detail", params={"status": "deleted"}, headers=ALICE)
    assert fault(r, 403, "forbidden") == "Only administrators may list deleted instances"
    r = await env.client.get("/v2.1/servers/detail", params={"status": "DELETED", "all_tenants": "1"},
                             headers=ADMIN)
    assert r.status_code == 200, r.text
    assert [(s["id"], s["status"]) for s in r.json()["servers"]] == [(gone, "DELETED")]


async def test_changes_since_includes_servers_deleted_since(env: Env):
    old = (await env.create(name="old"))["id"]
    await asyncio.sleep(0.01)
    since = datetime.now(UTC)
    await asyncio.sleep(0.01)
    new = (await env.create(name="new"))["id"]
    gone = (await env.create(name="gone"))["id"]
    await env.set_state(gone, VmState.DELETED)
    assert await list_ids(env) == {old, new}
    assert await list_ids(env, **{"changes-since": since.isoformat()}) == {new, gone}
    r = await env.client.get("/v2.1/servers/detail", params={"changes-since": since.isoformat()},
                             headers=ALICE)
    statuses = {s["id"]: s["status"] for s in r.json()["servers"]}
    assert statuses == {new: "BUILD", gone: "DELETED"}
    deleted = next(s for s in r.json()["servers"] if s["id"] == gone)
    assert deleted["OS-SRV-USG:terminated_at"] is not None


@pytest.mark.parametrize("value", ["2000-01-01T00:00:00Z", "2000-01-01T00:00:00", "2000-01-01",
                                   "2000-01-01T00:00:00.123456+02:00"])
async def test_changes_since_accepts_iso_8601(env: Env, value: str):
    sid = (await env.create())["id"]
    assert await list_ids(env, **{"changes-since": value}) == {sid}


async def test_changes_since_in_the_future_lists_nothing(env: Env):
    await env.create()
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await list_ids(env, **{"changes-since": future}) == set()


@pytest.mark.parametrize("value", ["yesterday", "2020-13-01T00:00:00Z", "12345", ""])
async def test_a_bad_changes_since_is_a_bad_request_naming_it(env: Env, value: str):
    r = await env.client.get("/v2.1/servers", params={"changes-since": value}, headers=ALICE)
    assert "changes-since" in fault(r, 400, "badRequest")


@pytest.mark.parametrize("value", ["-1", "ten", "1.5"])
async def test_a_bad_limit_is_a_bad_request_naming_it(env: Env, value: str):
    r = await env.client.get("/v2.1/servers", params={"limit": value}, headers=ALICE)
    assert "limit" in fault(r, 400, "badRequest")


@pytest.mark.parametrize("marker", [str(uuid4()), "not-a-uuid"])
async def test_an_unknown_marker_is_a_bad_request_naming_it(env: Env, marker: str):
    await env.create()
    r = await env.client.get("/v2.1/servers", params={"marker": marker}, headers=ALICE)
    assert "marker" in fault(r, 400, "badRequest")


async def test_unknown_query_parameters_are_ignored(env: Env):
    sid = (await env.create())["id"]
    assert await list_ids(env, sort_key="name", colour="blue") == {sid}


async def test_pages_follow_next_links_keeping_the_filters(env: Env):
    ids = []
    for i in range(3):
        ids.append((await env.create(name=f"web-{i}", flavorRef="1"))["id"])
        await asyncio.sleep(0.002)
    newest_first = list(reversed(ids))

    r = await env.client.get("/v2.1/servers/detail", params={"limit": "2", "name": "web", "flavor": "1"},
                             headers=ALICE)
    body = r.json()
    assert [s["id"] for s in body["servers"]] == newest_first[:2]
    [link] = body["servers_links"]
    assert link["rel"] == "next"
    url = httpx.URL(link["href"])
    assert url.path == "/v2.1/servers/detail"
    assert dict(url.params) == {"limit": "2", "name": "web", "flavor": "1", "marker": newest_first[1]}

    r = await env.client.get(link["href"], headers=ALICE)
    body = r.json()
    assert [s["id"] for s in body["servers"]] == newest_first[2:]
    assert "servers_links" not in body


async def test_a_page_that_is_not_full_has_no_next_link(env: Env):
    await env.create()
    r = await env.client.get("/v2.1/servers", params={"limit": "5"}, headers=ALICE)
    assert "servers_links" not in r.json()


async def test_index_pages_link_to_the_index(env: Env):
    await env.create()
    await env.create()
    r = await env.client.get("/v2.1/p-alice/servers", params={"limit": "1"}, headers=ALICE)
    href = r.json()["servers_links"][0]["href"]
    assert href.startswith("http://test/v2.1/p-alice/servers?")
    assert "marker=" in href


async def test_limit_zero_lists_nothing_and_links_nowhere(env: Env):
    await env.create()
    r = await env.client.get("/v2.1/servers", params={"limit": "0"}, headers=ALICE)
    assert r.json() == {"servers": []}


async def test_a_server_in_each_task_state_shows_its_status(env: Env):
    sid = (await env.create())["id"]
    await env.set_state(sid, VmState.ACTIVE, TaskState.REBOOTING)
    assert (await show(env, sid)).json()["server"]["status"] == "REBOOT"
    await env.set_state(sid, VmState.STOPPED)
    assert (await show(env, sid)).json()["server"]["status"] == "SHUTOFF"


async def test_a_filter_no_server_can_match_still_checks_policy_and_marker(env: Env):
    """An image filter that is no image id lists nothing, but all_tenants is still
    refused to a non-admin and a marker is still looked for (as without the filter)."""
    sid = (await env.create())["id"]
    r = await env.client.get("/v2.1/servers", params={"image": "not-an-id"}, headers=ALICE)
    assert r.json() == {"servers": []}
    r = await env.client.get("/v2.1/servers", params={"image": "not-an-id", "all_tenants": "1"},
                             headers=ALICE)
    assert r.status_code == 403
    r = await env.client.get("/v2.1/servers", params={"image": "not-an-id", "marker": sid},
                             headers=ALICE)
    assert r.status_code == 400 and "marker" in r.text
