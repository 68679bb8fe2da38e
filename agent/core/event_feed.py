"""The ordered event feed: the status events after a seq, at once, by long poll or as a
stream, and the notifier that wakes whoever waits when the store commits new events.

The store pokes the notifier after every commit that appended events (from its worker
thread), so a waiting poll or stream answers as soon as an event exists, without a tight
poll. A light fallback poll (FALLBACK_POLL_S) covers a wake-up that got lost anyway.

A stream or long poll holds a connection and a waiter for as long as it lasts, so they are
counted (StreamSlots: in all and per token; the API answers 429 past either), and each
re-checks its caller's right to read (`allowed`) every time it wakes, so a token revoked
by a reload (which pokes the notifier) ends its streams at once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import Any

from agent.model.job import StatusEvent
from agent.protocols import Store

MAX_WAIT_S = 30.0
MAX_LIMIT = 1000
FALLBACK_POLL_S = 1.0
HEARTBEAT_S = 15.0


def event_view(event: StatusEvent) -> dict[str, Any]:
    """An event as the feed and the webhooks show it (times in UTC, to the microsecond)."""
    return {"seq": event.seq, "server_id": str(event.server_id), "project_id": event.project_id,
            "old_status": event.old_status, "new_status": event.new_status,
            "power_state": event.power_state, "cause": event.cause,
            "at": event.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")}


class StreamSlots:
    """How many event streams and long polls are open: at most `max_total` in all and
    `max_per_key` per key (a token; its holder's streams, whichever listener they use)."""

    def __init__(self, max_total: int, max_per_key: int) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self._held: dict[str, int] = {}
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def acquire(self, key: str) -> bool:
        """Take a slot for `key`; False (nothing taken) when a cap is reached."""
        held = self._held.get(key, 0)
        if self._total >= self.max_total or held >= self.max_per_key:
            return False
        self._held[key] = held + 1
        self._total += 1
        return True

    def release(self, key: str) -> None:
        held = self._held.get(key, 0)
        if held <= 0:
            return
        self._total -= 1
        if held == 1:
            del self._held[key]
        else:
            self._held[key] = held - 1


def _always() -> bool:
    return True


class EventNotifier:
    """A generation counter that poke() moves on, and waiters on it.

    poke() is safe from any thread (the store's writer thread calls it after a commit);
    each waiter is woken in its own event loop, so waiters may sit in several loops. A
    waiter passes the generation it saw *before* reading the store, so a poke between its
    read and its wait is not lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # generation and waiters: poke() comes from any thread
        self._generation = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def closed(self) -> bool:
        return self._closed

    def poke(self) -> None:
        """New events are committed: wake every waiter. Never raises (the store calls it
        right after a commit, which must not look failed because of it)."""
        with self._lock:
            self._generation += 1
            waiters, self._waiters = self._waiters, set()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for future in waiters:
            loop = future.get_loop()
            if loop is running:
                _release(future)
            else:
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    loop.call_soon_threadsafe(_release, future)

    def close(self) -> None:
        """The daemon stops: wake every waiter, and no wait blocks from now on."""
        self._closed = True
        self.poke()

    async def wait(self, seen: int, timeout: float) -> bool:
        """Until the generation is past `seen` (True), or `timeout` seconds (False)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._generation != seen or self._closed:
                return self._generation != seen
            self._waiters.add(future)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        finally:
            with self._lock:
                self._waiters.discard(future)
        return self._generation != seen


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EventFeed:
    """Reads the store's events for the API. `notifier` None: nothing wakes a waiter, so a
    long poll answers at once (what a caller without the daemon's wiring gets)."""

    def __init__(self, store: Store, notifier: EventNotifier | None, *,
                 fallback_poll_s: float = FALLBACK_POLL_S, heartbeat_s: float = HEARTBEAT_S,
                 slots: StreamSlots | None = None) -> None:
        self._store = store
        self._notifier = notifier
        self._fallback_poll_s = fallback_poll_s
        self._heartbeat_s = heartbeat_s
        # Shared by every listener's feed (the daemon's caps); None: only this feed's own.
        self.slots = slots or StreamSlots(64, 4)

    async def _read(self, since: int, project_id: str | None, limit: int) -> list[StatusEvent]:
        return await asyncio.to_thread(self._store.events_since, since, project_id, limit)

    async def page(self, since: int, project_id: str | None, limit: int,
                   wait_s: float = 0.0, allowed: Callable[[], bool] = _always) -> list[StatusEvent]:
        """Up to `limit` events after `since` (of the project; None: all), in seq order.
        None yet: wait up to `wait_s` (capped at MAX_WAIT_S) for the first to arrive, while
        `allowed()` holds (checked at each wake-up; once false: an empty answer)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait_s, 0.0), MAX_WAIT_S)
        notifier = self._notifier
        while True:
            seen = notifier.generation if notifier is not None else 0
            events = await self._read(since, project_id, limit)
            remaining = deadline - loop.time()
            if events or remaining <= 0 or notifier is None or notifier.closed:
                return events
            await notifier.wait(seen, min(remaining, self._fallback_poll_s))
            if not allowed():
                return []

    async def stream(self, since: int, project_id: str | None, batch: int = 100,
                     allowed: Callable[[], bool] = _always) -> AsyncIterator[StatusEvent | None]:
        """Every event after `since`, in seq order, as they come, until the notifier is
        closed or `allowed()` (checked before each read) turns false. None now and then
        (every heartbeat_s without events): a keep-alive."""
        loop = asyncio.get_running_loop()
        notifier = self._notifier
        last_sent = loop.time()
        while (notifier is None or not notifier.closed) and allowed():
            seen = notifier.generation if notifier is not None else 0
            events = await self._read(since, project_id, batch)
            for event in events:
                yield event
                since = event.seq
            if events:
                last_sent = loop.time()
                if len(events) == batch:
                    continue  # more are waiting: no need to sleep
            elif loop.time() - last_sent >= self._heartbeat_s:
                yield None
                last_sent = loop.time()
            if notifier is None:
                await asyncio.sleep(self._fallback_poll_s)
            else:
                await notifier.wait(seen, self._fallback_poll_s)
