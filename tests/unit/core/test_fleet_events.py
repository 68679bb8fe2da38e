"""The agent's events to the fleet from the store's outbox: in seq order, as EventMessages
of this host, the cursor moved only after the broker confirmed, resumed after a restart."""

from __future__ import annotations

import asyncio

from agent.core.fleet_events import CURSOR, FleetEventRelay
from agent.model.fleet import EventMessage
from agent.model.states import Status, VmState
from tests.unit.core.test_event_feed import add_server, until, wired


class Publisher:
    """Confirms each event at once, or holds them while `hold` is clear (a broker away)."""

    def __init__(self) -> None:
        self.events: list[EventMessage] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def publish_event(self, event: EventMessage) -> None:
        await self.hold.wait()
        self.events.append(event)

    async def publish_heartbeat(self, heartbeat) -> None:  # pragma: no cover - not used here
        raise AssertionError


async def test_events_go_out_in_seq_order_as_this_hosts_and_the_cursor_follows_confirms():
    store, notifier = wired()
    await store.webhook_cursor(CURSOR)  # the relay has run before: from the start of history
    publisher = Publisher()
    relay = asyncio.create_task(FleetEventRelay(store, publisher, notifier, "hv1").run())
    server = await add_server(store)
    await store.update_server(server.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
    await until(lambda: store.peek_webhook_cursor(CURSOR) == 2)
    assert [(e.host, e.seq, e.server_id, e.status) for e in publisher.events] == [
        ("hv1", 1, server.id, Status.BUILD), ("hv1", 2, server.id, Status.ACTIVE)]
    assert all(e.at.tzinfo is not None for e in publisher.events)

    publisher.hold.clear()  # the broker is away: the event waits, the cursor stays
    await store.update_server(server.id, {"vm_state": VmState.STOPPED}, cause="stopped")
    await asyncio.sleep(0.05)
    assert store.peek_webhook_cursor(CURSOR) == 2
    relay.cancel()  # the agent restarts meanwhile ...
    publisher.hold.set()
    relay = asyncio.create_task(FleetEventRelay(store, publisher, notifier, "hv1").run())
    await until(lambda: store.peek_webhook_cursor(CURSOR) == 3)  # ... and resumes from its cursor
    assert [e.seq for e in publisher.events] == [1, 2, 3]
    relay.cancel()


async def test_a_relay_without_a_cursor_starts_from_the_newest_event():
    store, notifier = wired()
    server = await add_server(store)
    publisher = Publisher()
    relay = asyncio.create_task(FleetEventRelay(store, publisher, notifier, "hv1").run())
    await until(lambda: CURSOR in store._webhook_cursors)  # made by the relay, at the head
    await store.update_server(server.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
    await until(lambda: len(publisher.events) == 1)
    assert publisher.events[0].seq == 2
    relay.cancel()


async def test_each_event_carries_the_servers_current_state_from_the_store():
    store, notifier = wired()
    await store.webhook_cursor(CURSOR)
    publisher = Publisher()
    server = await add_server(store)
    await store.update_server(server.id, {"vm_state": VmState.ACTIVE, "task_state": None,
                                          "power_state": 1, "progress": 100}, cause="spawned")
    relay = asyncio.create_task(FleetEventRelay(store, publisher, notifier, "hv1").run())
    await until(lambda: store.peek_webhook_cursor(CURSOR) == 2)
    relay.cancel()
    now = store.get_server(server.id)
    # Both events carry the row as it is now (the newest is what the controller must hold).
    for event in publisher.events:
        snap = event.server
        assert snap is not None
        assert (snap.vm_state, snap.task_state, snap.power_state, snap.progress) == (
            VmState.ACTIVE, None, 1, 100)
        assert snap.updated_at == now.updated_at


async def test_an_event_whose_server_row_is_gone_carries_no_snapshot(monkeypatch):
    store, notifier = wired()
    await store.webhook_cursor(CURSOR)
    publisher = Publisher()
    await add_server(store)
    monkeypatch.setattr(store, "get_server", lambda *_a, **_k: None)  # no Store call removes a row
    relay = asyncio.create_task(FleetEventRelay(store, publisher, notifier, "hv1").run())
    await until(lambda: store.peek_webhook_cursor(CURSOR) == 1)
    relay.cancel()
    assert [e.server for e in publisher.events] == [None]
