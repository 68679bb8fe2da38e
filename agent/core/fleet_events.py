"""The agent's status events to the fleet (issue 12), from the durable outbox webhooks
use: the store's events table, with its own cursor there ("amqp://fleet/events").

Events go out one at a time in seq order (the store's seq is the per-host sequence);
the cursor moves on only after the broker confirmed the event, so a restart resends at
most the last one and the controller drops what it has applied (agent.model.fleet.
event_verdict). A relay that starts without a cursor starts from the newest event, as a
new webhook does: the controller sees a gap and asks for a snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from agent.core.event_feed import FALLBACK_POLL_S, EventNotifier
from agent.model.domain import PowerState
from agent.model.fleet import EventMessage, ServerSnapshot
from agent.model.job import StatusEvent
from agent.model.server import Server
from agent.model.states import Status
from agent.protocols import FleetPublisher, Store

log = structlog.get_logger("agent.fleet")

CURSOR = "amqp://fleet/events"  # its key among the outbox cursors (a URL, as webhooks')
RETRY_S = 5.0  # after an unexpected error (the store unavailable, say)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def server_snapshot(server: Server) -> ServerSnapshot:
    """What the agent owns of the server, as its row is now (the controller copies it)."""
    return ServerSnapshot(
        vm_state=server.vm_state, task_state=server.task_state, power_state=server.power_state,
        progress=server.progress, fault=server.fault,
        launched_at=_aware(server.launched_at) if server.launched_at else None,
        deleted_at=_aware(server.deleted_at) if server.deleted_at else None,
        updated_at=_aware(server.updated_at))


def event_message(host: str, event: StatusEvent, server: Server | None = None) -> EventMessage:
    """The event as the fleet gets it, with the server's current state (None: its row is
    gone)."""
    return EventMessage(host=host, seq=event.seq, server_id=event.server_id,
                        status=Status(event.new_status), power_state=PowerState(event.power_state),
                        at=_aware(event.at),
                        server=server_snapshot(server) if server is not None else None)


class FleetEventRelay:
    """Publishes the store's events to the fleet for as long as run() runs."""

    def __init__(self, store: Store, publisher: FleetPublisher, notifier: EventNotifier, host: str,
                 *, batch: int = 100, fallback_poll_s: float = FALLBACK_POLL_S,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._store = store
        self._publisher = publisher
        self._notifier = notifier
        self._host = host
        self._batch = batch
        self._fallback_poll_s = fallback_poll_s
        self._sleep = sleep

    async def run(self) -> None:
        while not self._notifier.closed:
            try:
                await self._relay()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # resume from the durable cursor after a pause
                log.error("fleet.relay_failed", error=type(e).__name__, detail=str(e)[:200])
                await self._sleep(RETRY_S)

    async def _relay(self) -> None:
        cursor = await self._store.webhook_cursor(CURSOR)
        while True:
            seen = self._notifier.generation
            events = await asyncio.to_thread(self._store.events_since, cursor, None, self._batch)
            if not events:
                if self._notifier.closed:
                    return
                await self._notifier.wait(seen, self._fallback_poll_s)
                continue
            for event in events:
                # Read as late as possible: the newest state is what the controller should hold.
                server = self._store.get_server(event.server_id)
                await self._publisher.publish_event(event_message(self._host, event, server))
                await self._store.advance_webhook_cursor(CURSOR, event.seq)
                cursor = event.seq
