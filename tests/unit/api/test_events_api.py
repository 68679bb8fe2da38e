"""GET /v2.1/os-server-events: the caller's project's status events after `since`, in seq
order (an admin's: every project's), limited; a long poll answered by the next event; a
server-sent event stream with `id: <seq>` that honours Last-Event-ID; 400s naming the field."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agent.api import models_events
from agent.core.event_feed import EventFeed, EventNotifier, StreamSlots
from agent.model.states import VmState
from tests.unit.api.conftest import ADMIN, ALICE, BOB, Env, fault

URL = "/v2.1/os-server-events"
LONG = 30.0


async def two_projects(env: Env) -> tuple[str, str]:
    alice = await env.create_active(ALICE)
    bob = await env.create_active(BOB)
    await env.set_state(alice, VmState.STOPPED)
    return alice, bob


async def page(env: Env, headers: dict[str, str] = ALICE, **params: Any) -> dict[str, Any]:
    r = await env.client.get(URL, params=params, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    models_events.ServerEventPage.model_validate(body)
    return body


async def test_a_user_sees_only_their_projects_events_in_seq_order(env: Env):
    alice, _bob = await two_projects(env)
    body = await page(env)
    assert [(e["server_id"], e["old_status"], e["new_status"]) for e in body["events"]] == [
        (alice, None, "BUILD"), (alice, "BUILD", "ACTIVE"), (alice, "ACTIVE", "SHUTOFF")]
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == sorted(seqs) and body["last_seq"] == seqs[-1]
    assert {e["project_id"] for e in body["events"]} == {"p-alice"}


async def test_an_admin_sees_every_project_and_since_and_limit_page_through(env: Env):
    await two_projects(env)
    everything = (await page(env, ADMIN))["events"]
    assert [e["seq"] for e in everything] == [1, 2, 3, 4, 5]
    first = await page(env, ADMIN, limit=2)
    assert [e["seq"] for e in first["events"]] == [1, 2] and first["last_seq"] == 2
    rest = await page(env, ADMIN, since=first["last_seq"])
    assert [e["seq"] for e in rest["events"]] == [3, 4, 5]
    empty = await page(env, ADMIN, since=5)
    assert empty == {"events": [], "last_seq": 5}


async def test_the_project_in_the_url_serves_the_same_feed(env: Env):
    await two_projects(env)
    r = await env.client.get("/v2.1/p-alice/os-server-events", headers=ALICE)
    assert r.status_code == 200 and len(r.json()["events"]) == 3
    r = await env.client.get("/v2.1/p-bob/os-server-events", headers=ALICE)
    fault(r, 400, "badRequest")


@pytest.mark.parametrize(("params", "headers", "field"), [
    ({"since": "-1"}, {}, "since"),
    ({"since": "x"}, {}, "since"),
    ({"since": str(2**63)}, {}, "since"),
    ({"limit": "0"}, {}, "limit"),
    ({"limit": "1001"}, {}, "limit"),
    ({"wait": "31"}, {}, "wait"),
    ({"wait": "-0.5"}, {}, "wait"),
    ({"wait": "nan"}, {}, "wait"),
    ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
])
async def test_bad_parameters_are_a_400_naming_the_field(env: Env, params: dict[str, str],
                                                         headers: dict[str, str], field: str):
    r = await env.client.get(URL, params=params, headers={**ALICE, **headers})
    assert field in fault(r, 400, "badRequest")


async def test_without_a_token_it_is_a_401(env: Env):
    r = await env.client.get(URL)
    assert r.status_code == 401


@pytest.fixture
def wired(env: Env) -> EventNotifier:
    """The feed as the daemon wires it: the store pokes the notifier after each commit."""
    notifier = EventNotifier()
    env.store.set_event_listener(notifier.poke)
    env.deps.events = EventFeed(env.store, notifier, fallback_poll_s=LONG)
    return notifier


async def test_a_long_poll_is_answered_by_the_next_event(env: Env, wired: EventNotifier):
    alice = await env.create_active(ALICE)
    since = (await page(env))["last_seq"]
    poll = asyncio.create_task(env.client.get(URL, params={"since": since, "wait": LONG}, headers=ALICE))
    await asyncio.sleep(0.05)
    assert not poll.done()
    await env.set_state(alice, VmState.STOPPED)
    r = await asyncio.wait_for(poll, LONG / 2)  # the fallback poll (LONG) would be too late
    assert [(e["old_status"], e["new_status"]) for e in r.json()["events"]] == [("ACTIVE", "SHUTOFF")]


def parse_sse(text: str) -> list[dict[str, str]]:
    """The events of a text/event-stream body (comments and retry fields left out)."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "data" in fields:
            out.append(fields)
    return out


def close_after_first_read(env: Env, notifier: EventNotifier) -> None:
    """End the stream after its first read of the store (httpx's ASGI transport hands the
    body over only once the stream ends)."""
    real = env.store.events_since

    def events_since(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        notifier.close()
        return found

    env.store.events_since = events_since  # type: ignore[method-assign]


async def test_the_event_stream_sends_each_event_with_its_seq_as_id(env: Env, wired: EventNotifier):
    alice, _ = await two_projects(env)
    close_after_first_read(env, wired)
    r = await env.client.get(URL, headers={**ALICE, "Accept": "text/event-stream"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert [e["event"] for e in events] == ["status"] * 3
    data = [json.loads(e["data"]) for e in events]
    assert [int(e["id"]) for e in events] == [d["seq"] for d in data] == [1, 2, 5]
    assert [(d["server_id"], d["new_status"]) for d in data] == [
        (alice, "BUILD"), (alice, "ACTIVE"), (alice, "SHUTOFF")]


async def test_the_event_stream_resumes_after_last_event_id(env: Env, wired: EventNotifier):
    await two_projects(env)
    close_after_first_read(env, wired)
    r = await env.client.get(URL, params={"since": 0},
                             headers={**ADMIN, "Accept": "text/event-stream", "Last-Event-ID": "3"})
    assert [int(e["id"]) for e in parse_sse(r.text)] == [4, 5]


SSE = {"Accept": "text/event-stream"}


async def test_a_revoked_token_ends_its_open_stream_and_long_poll_before_the_next_event(
        env: Env, wired: EventNotifier):
    """SIGHUP reloads the tokens in place and pokes the notifier: a stream or long poll
    whose token is gone (or now means something else) ends without another event."""
    alice = await env.create_active(ALICE)
    since = (await page(env))["last_seq"]
    stream = asyncio.create_task(env.client.get(URL, headers={**ALICE, **SSE}))
    poll = asyncio.create_task(env.client.get(URL, params={"since": since, "wait": LONG}, headers=ALICE))
    await asyncio.sleep(0.05)
    assert not stream.done() and not poll.done()
    del env.deps.tokens["tok-alice"]
    await env.set_state(alice, VmState.STOPPED)  # a commit: pokes the notifier
    streamed = await asyncio.wait_for(stream, LONG / 2)
    assert [json.loads(e["data"])["new_status"] for e in parse_sse(streamed.text)] == ["BUILD", "ACTIVE"]
    polled = await asyncio.wait_for(poll, LONG / 2)
    assert polled.status_code == 200 and polled.json()["events"] == []
    r = await env.client.get(URL, headers={**ALICE, **SSE})
    assert r.status_code == 401


async def test_streams_and_long_polls_are_capped_per_token_and_in_all_with_a_429(
        env: Env, wired: EventNotifier):
    env.deps.events = EventFeed(env.store, wired, fallback_poll_s=LONG, slots=StreamSlots(3, 2))
    held = [asyncio.create_task(env.client.get(URL, headers={**ALICE, **SSE})) for _ in range(2)]
    await asyncio.sleep(0.05)
    r = await asyncio.wait_for(env.client.get(URL, headers={**ALICE, **SSE}), LONG / 2)
    assert "for this token" in fault(r, 429, "overLimit") and int(r.headers["Retry-After"]) > 0
    r = await asyncio.wait_for(env.client.get(URL, params={"wait": 5}, headers=ALICE), LONG / 2)
    fault(r, 429, "overLimit")
    assert (await page(env, ALICE)) == {"events": [], "last_seq": 0}  # no wait: no slot needed
    held.append(asyncio.create_task(env.client.get(URL, params={"wait": LONG}, headers=BOB)))
    await asyncio.sleep(0.05)
    r = await asyncio.wait_for(env.client.get(URL, headers={**ADMIN, **SSE}), LONG / 2)
    assert "in all" in fault(r, 429, "overLimit")
    wired.close()  # the daemon stops: every stream and poll ends and gives its slot back
    assert all(r.status_code == 200 for r in await asyncio.wait_for(asyncio.gather(*held), LONG / 2))
    assert env.deps.events.slots.total == 0
