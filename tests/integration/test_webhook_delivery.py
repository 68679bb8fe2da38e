"""Webhook delivery for real: SqliteStore as the outbox, the httpx sender, and an HTTP
receiver on 127.0.0.1 that fails the first deliveries. Each event arrives at least once and
in seq order; a receiver that is down while the agent restarts loses no event."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.adapters.sqlite_store import SqliteStore
from agent.adapters.webhook_http import HttpxWebhookSender
from agent.core.event_feed import EventNotifier, event_view
from agent.core.webhooks import SEQ_HEADER, Backoff, WebhookDispatcher, WebhookTarget
from agent.model.job import Job, JobKind
from agent.model.server import Server
from agent.model.states import VmState
from tests.support.webhook_receiver import Receiver

LONG = 30.0
FAST = Backoff(initial_s=0.01, max_s=0.05)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    yield s
    s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def add_server(store: SqliteStore) -> Server:
    now = datetime.now(UTC)
    server = Server(id=uuid.uuid4(), project_id="p1", user_id="u", name="vm", image_id=uuid.uuid4(),
                    flavor_id="1", created_at=now, updated_at=now)
    await store.create_server(server, Job(id=uuid.uuid4(), server_id=server.id, kind=JobKind.CREATE,
                                    created_at=now, updated_at=now))
    return server


def cursor_of(store: SqliteStore, url: str) -> int | None:
    """The URL's cursor as committed (None without one), read beside the store: usable in
    a synchronous wait condition, and it never writes (webhook_cursor may)."""
    with closing(sqlite3.connect(store.path)) as conn:
        row = conn.execute("SELECT seq FROM webhook_cursors WHERE url = ?", (url,)).fetchone()
    return None if row is None else int(row[0])


async def changes(store: SqliteStore, count: int) -> None:
    """`count` servers, each BUILD -> ACTIVE -> SHUTOFF: 3 * count events."""
    for _ in range(count):
        server = await add_server(store)
        await store.update_server(server.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
        await store.update_server(server.id, {"vm_state": VmState.STOPPED}, cause="guest powered off")


def dispatcher(store: SqliteStore) -> WebhookDispatcher:
    notifier = EventNotifier()
    store.set_event_listener(notifier.poke)
    return WebhookDispatcher(store, HttpxWebhookSender(), notifier, backoff=FAST)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(LONG):
        while not condition():
            await asyncio.sleep(0.01)


async def test_failed_deliveries_are_retried_and_every_event_arrives_in_order(store: SqliteStore):
    receiver = Receiver(fail_first=3)
    url = f"http://127.0.0.1:{receiver.port}/hooks/agent?key=k"
    try:
        await store.webhook_cursor(url)  # a webhook configured before these events
        hooks = dispatcher(store)
        hooks.configure([WebhookTarget(url, timeout_s=5)])
        await changes(store, 3)
        events = store.events_since(0)
        await until(lambda: cursor_of(store, url) == events[-1].seq)
        await hooks.close()
    finally:
        receiver.close()
    # Each acknowledged once, in order.
    assert [seq for seq, _ in receiver.acknowledged()] == [e.seq for e in events]
    tried = [seq for seq, _, _ in receiver.requests]
    assert tried[:4] == [events[0].seq] * 4  # three 503s, then the 200
    assert tried == sorted(tried)  # never an event before an earlier one
    bodies = dict(receiver.acknowledged())
    assert [bodies[e.seq] for e in events] == [event_view(e) for e in events]


async def test_no_event_is_lost_when_the_receiver_is_down_across_a_restart(tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    first_store = SqliteStore(tmp_path / "state.db")
    await first_store.webhook_cursor(url)
    hooks = dispatcher(first_store)
    hooks.configure([WebhookTarget(url, timeout_s=5)])
    await changes(first_store, 1)
    await asyncio.sleep(0.2)  # connection refused, again and again: nothing acknowledged
    assert await first_store.webhook_cursor(url) == 0
    await hooks.close()
    first_store.close()  # the agent goes away

    store = SqliteStore(tmp_path / "state.db")  # and comes back
    try:
        await changes(store, 1)  # more events while the receiver is still down
        receiver = Receiver(port=port)
        try:
            hooks = dispatcher(store)
            hooks.configure([WebhookTarget(url, timeout_s=5)])
            await until(lambda: cursor_of(store, url) == 6)
            await hooks.close()
        finally:
            receiver.close()
    finally:
        store.close()
    assert [seq for seq, _ in receiver.acknowledged()] == [1, 2, 3, 4, 5, 6]


async def test_the_sender_reports_a_timeout_and_a_refusal_without_the_url():
    sender = HttpxWebhookSender()
    slow = Receiver(delay_s=1.0)
    try:
        reply = await sender.post(f"http://127.0.0.1:{slow.port}/", b"{}", {SEQ_HEADER: "1"}, timeout_s=0.1)
        assert (reply.status, reply.error, reply.ok) == (None, "ReadTimeout", False)
        reply = await sender.post(f"http://127.0.0.1:{free_port()}/x?key=SECRET", b"{}", {}, 5)
        assert (reply.status, reply.error) == (None, "ConnectError")
    finally:
        await sender.aclose()
        slow.close()
