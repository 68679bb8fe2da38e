"""The event feed: the notifier wakes waiters (from any thread, none lost between a read and
a wait), a long poll answers as soon as an event is committed, a stream yields every event
in seq order and ends when the notifier is closed."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from agent.core.event_feed import EventFeed, EventNotifier, event_view
from agent.model.job import Job, JobKind, StatusEvent
from agent.model.server import Server
from agent.model.states import VmState
from tests.unit.fakes.store import MemoryStore

LONG = 30.0  # a bound no passing test comes near: a wake-up that never comes fails the test


async def add_server(store: MemoryStore, project_id: str = "p1") -> Server:
    now = datetime.now(UTC)
    server = Server(id=uuid.uuid4(), project_id=project_id, user_id="u", name="vm",
                    image_id=uuid.uuid4(), flavor_id="1", created_at=now, updated_at=now)
    await store.create_server(server, Job(id=uuid.uuid4(), server_id=server.id, kind=JobKind.CREATE,
                                    created_at=now, updated_at=now))
    return server


def wired() -> tuple[MemoryStore, EventNotifier]:
    store, notifier = MemoryStore(), EventNotifier()
    store.set_event_listener(notifier.poke)
    return store, notifier


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(LONG):
        while not condition():
            await asyncio.sleep(0.01)


# -- the notifier ---------------------------------------------------------------------------

async def test_a_poke_from_another_thread_wakes_a_waiter():
    notifier = EventNotifier()
    seen = notifier.generation
    waiter = asyncio.create_task(notifier.wait(seen, LONG))
    await asyncio.sleep(0)
    threading.Thread(target=notifier.poke).start()
    assert await asyncio.wait_for(waiter, LONG) is True


async def test_waiters_in_two_event_loops_are_each_woken_in_their_own():
    """A notifier is not bound to the first loop that used it: a waiter in another loop
    (a thread's own, as a test client's requests may run in) is woken too."""
    notifier = EventNotifier()
    seen = notifier.generation
    here = asyncio.create_task(notifier.wait(seen, LONG))
    there: list[bool] = []
    waiting = threading.Event()

    async def wait_there() -> None:
        task = asyncio.create_task(notifier.wait(seen, LONG))
        await asyncio.sleep(0)
        waiting.set()
        there.append(await task)

    thread = threading.Thread(target=asyncio.run, args=(wait_there(),))
    thread.start()
    await asyncio.to_thread(waiting.wait, LONG)
    await asyncio.sleep(0)
    notifier.poke()
    assert await asyncio.wait_for(here, LONG) is True
    await asyncio.to_thread(thread.join, LONG)
    assert there == [True]


async def test_a_poke_between_reading_and_waiting_is_not_lost():
    notifier = EventNotifier()
    seen = notifier.generation  # read before the store is read...
    notifier.poke()  # ...an event is committed meanwhile...
    assert await asyncio.wait_for(notifier.wait(seen, LONG), LONG) is True  # ...no sleep


async def test_a_wait_without_a_poke_times_out_false():
    notifier = EventNotifier()
    assert await notifier.wait(notifier.generation, 0.01) is False


async def test_close_wakes_every_waiter_and_later_waits_return_at_once():
    notifier = EventNotifier()
    seen = notifier.generation
    waiters = [asyncio.create_task(notifier.wait(seen, LONG)) for _ in range(3)]
    await asyncio.sleep(0)
    notifier.close()
    await asyncio.wait_for(asyncio.gather(*waiters), LONG)
    assert notifier.closed
    await asyncio.wait_for(notifier.wait(notifier.generation, LONG), LONG)


# -- pages and long polls -------------------------------------------------------------------

async def test_a_page_is_the_events_after_since_of_the_project_in_order_and_limited():
    store, notifier = wired()
    a1, b1, a2 = await add_server(store, "pa"), await add_server(store, "pb"), await add_server(store, "pa")
    await store.update_server(a1.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
    feed = EventFeed(store, notifier)
    everything = await feed.page(0, None, 100)
    assert [e.seq for e in everything] == [1, 2, 3, 4]
    mine = await feed.page(0, "pa", 100)
    assert [(e.server_id, e.new_status) for e in mine] == [
        (a1.id, "BUILD"), (a2.id, "BUILD"), (a1.id, "ACTIVE")]
    assert [e.seq for e in await feed.page(1, "pa", 1)] == [3]
    assert b1.id not in {e.server_id for e in mine}


async def test_a_long_poll_answers_as_soon_as_an_event_is_committed():
    store, notifier = wired()
    # No fallback poll to speak of: only the store's poke can end this wait in time.
    feed = EventFeed(store, notifier, fallback_poll_s=LONG)
    poll = asyncio.create_task(feed.page(0, None, 100, wait_s=LONG))
    await asyncio.sleep(0.05)
    assert not poll.done()
    server = await asyncio.to_thread(asyncio.run, add_server(store))  # committed in a worker thread
    events = await asyncio.wait_for(poll, LONG / 2)
    assert [(e.server_id, e.new_status) for e in events] == [(server.id, "BUILD")]


async def test_a_long_poll_ignores_other_projects_events_and_times_out_empty():
    store, notifier = wired()
    feed = EventFeed(store, notifier, fallback_poll_s=0.01)
    poll = asyncio.create_task(feed.page(0, "mine", 100, wait_s=0.3))
    await asyncio.sleep(0.05)
    await add_server(store, "theirs")
    assert await asyncio.wait_for(poll, LONG) == []


async def test_without_a_notifier_a_page_answers_at_once_whatever_the_wait():
    feed = EventFeed(MemoryStore(), None, fallback_poll_s=LONG)
    assert await asyncio.wait_for(feed.page(0, None, 10, wait_s=LONG), LONG / 2) == []


# -- streams --------------------------------------------------------------------------------

async def test_a_stream_yields_old_then_new_events_in_order_until_closed():
    store, notifier = wired()
    first = await add_server(store)
    feed = EventFeed(store, notifier, fallback_poll_s=LONG, heartbeat_s=LONG)
    got: list[StatusEvent] = []

    async def consume() -> None:
        async for event in feed.stream(0, None, batch=2):
            assert event is not None
            got.append(event)

    consumer = asyncio.create_task(consume())
    await until(lambda: len(got) == 1)
    second = await add_server(store)
    await store.update_server(first.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
    await store.update_server(second.id, {"vm_state": VmState.ERROR}, cause="failed")
    await until(lambda: len(got) == 4)
    notifier.close()
    await asyncio.wait_for(consumer, LONG)
    assert [e.seq for e in got] == [1, 2, 3, 4]
    assert [(e.server_id, e.new_status) for e in got[1:]] == [
        (second.id, "BUILD"), (first.id, "ACTIVE"), (second.id, "ERROR")]


async def test_a_stream_resumes_after_since_and_sends_keep_alives_when_idle():
    store, notifier = wired()
    for _ in range(3):
        await add_server(store)
    feed = EventFeed(store, notifier, fallback_poll_s=0.01, heartbeat_s=0.05)
    got: list[StatusEvent | None] = []

    async def consume() -> None:
        async for item in feed.stream(2, None):
            got.append(item)

    consumer = asyncio.create_task(consume())
    await until(lambda: None in got)
    notifier.close()
    await asyncio.wait_for(consumer, LONG)
    assert [e.seq for e in got if e is not None] == [3]


async def test_the_event_view_shows_every_field_in_utc():
    store = MemoryStore()
    server = await add_server(store, "p9")
    [event] = store.events_since(0)
    view = event_view(event)
    assert view == {"seq": 1, "server_id": str(server.id), "project_id": "p9", "old_status": None,
                    "new_status": "BUILD", "power_state": 0, "cause": "create", "at": view["at"]}
    assert view["at"].endswith("Z") and datetime.fromisoformat(view["at"]) == event.at
