"""Webhook delivery from a durable outbox: the events table.

Each webhook URL has its own task and its own cursor in the store (the seq of the last
event its receiver acknowledged with a 2xx). A task POSTs the events after its cursor one
at a time, in seq order, retrying each with capped exponential backoff and jitter until a
2xx, and only then moves the cursor on: delivery is at least once and survives a restart
(kill -9 included), and a dead receiver holds up only its own URL. A URL seen for the first
time starts from the newest event, not from the whole history."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog

from agent.core.event_feed import FALLBACK_POLL_S, EventNotifier, event_view
from agent.model.job import StatusEvent
from agent.protocols import Store, WebhookSender

log = structlog.get_logger("agent.webhooks")

SEQ_HEADER = "X-Compute-Agent-Event-Seq"
ATTEMPT_HEADER = "X-Compute-Agent-Delivery-Attempt"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    timeout_s: float = 10.0
    # Extra request headers (say, Authorization): they may hold secrets, never logged.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The HMAC key (the decoded "whsec_..." secret); None: bodies go unsigned.
    secret: bytes | None = field(default=None, repr=False)


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value: "v1," + base64(HMAC-SHA256 of
    "{id}.{timestamp}.{body}")."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": after n failures, a delay between half and
    all of min(max_s, initial_s * 2**(n-1)), so retries of many agents do not line up."""

    initial_s: float = 1.0
    max_s: float = 60.0

    def delay(self, failures: int, rng: Callable[[], float]) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(failures - 1, 62))
        return ceiling / 2 + rng() * ceiling / 2


def safe_url(url: str) -> str:
    """The URL as logs show it: scheme, host and port only (its user info, path and query
    may hold a secret token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def event_body(event: StatusEvent) -> bytes:
    return json.dumps(event_view(event), sort_keys=True).encode()


class WebhookDispatcher:
    """Runs one delivery task per configured URL; configure() again to change the set."""

    def __init__(self, store: Store, sender: WebhookSender, notifier: EventNotifier, *,
                 backoff: Backoff | None = None, batch: int = 100,
                 fallback_poll_s: float = FALLBACK_POLL_S,
                 rng: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time, message_id_prefix: str = "evt-") -> None:
        self._store = store
        self._sender = sender
        self._notifier = notifier
        self.backoff = backoff or Backoff()
        self._batch = batch
        self._fallback_poll_s = fallback_poll_s
        self._rng = rng
        self._sleep = sleep
        self._clock = clock
        self._id_prefix = message_id_prefix  # with the host's name: unique across agents
        self._targets: dict[str, WebhookTarget] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def urls(self) -> list[str]:
        return list(self._tasks)

    def configure(self, targets: Sequence[WebhookTarget], backoff: Backoff | None = None) -> None:
        """Deliver to exactly these URLs from now on: start the new ones, stop the removed
        ones (their cursors stay: re-added later, a URL resumes where it stopped), and
        let the kept ones use their new options from their next attempt."""
        if backoff is not None:
            self.backoff = backoff
        self._targets = {t.url: t for t in targets}
        for url in [u for u in self._tasks if u not in self._targets]:
            self._tasks.pop(url).cancel()
            log.info("webhook.removed", webhook=safe_url(url))
        for url, target in self._targets.items():
            if url not in self._tasks:
                self._tasks[url] = asyncio.create_task(self._run(url), name=f"webhook {safe_url(url)}")
                log.info("webhook.added", webhook=safe_url(url), signed=target.secret is not None)
                if target.secret is None:
                    log.warning("webhook.unsigned", webhook=safe_url(url),
                                hint="give it a secret: its receiver cannot tell forged bodies")

    async def close(self) -> None:
        """Stop every delivery task (an unacknowledged event is sent again at the next
        start), then the sender."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._sender.aclose()

    async def _run(self, url: str) -> None:
        """Deliver for as long as the URL is configured; an unexpected error (the store
        unavailable, say) restarts delivery from the durable cursor after a pause."""
        failures = 0
        while not self._notifier.closed:
            try:
                await self._deliver(url)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # one URL's trouble must not end its task
                failures += 1
                log.error("webhook.loop_failed", webhook=safe_url(url), error=type(e).__name__,
                          detail=str(e)[:200])
                await self._sleep(self.backoff.delay(failures, self._rng))

    async def _deliver(self, url: str) -> None:
        cursor = await self._store.webhook_cursor(url)
        while True:
            seen = self._notifier.generation
            events = await asyncio.to_thread(self._store.events_since, cursor, None, self._batch)
            if not events:
                if self._notifier.closed:  # the daemon is stopping
                    return
                await self._notifier.wait(seen, self._fallback_poll_s)
                continue
            for event in events:
                await self._post_until_acknowledged(url, event)
                await self._store.advance_webhook_cursor(url, event.seq)
                cursor = event.seq

    async def _post_until_acknowledged(self, url: str, event: StatusEvent) -> None:
        body = event_body(event)
        failures = 0
        while True:
            target = self._targets.get(url)  # its newest options
            if target is None:  # removed meanwhile: its task is being cancelled
                raise asyncio.CancelledError
            headers = {**target.headers, "Content-Type": "application/json",
                       SEQ_HEADER: str(event.seq), ATTEMPT_HEADER: str(failures + 1)}
            if target.secret is not None:
                message_id, now = f"{self._id_prefix}{event.seq}", int(self._clock())
                headers |= {ID_HEADER: message_id, TIMESTAMP_HEADER: str(now),
                            SIGNATURE_HEADER: sign(target.secret, message_id, now, body)}
            reply = await self._sender.post(url, body, headers, target.timeout_s)
            if reply.ok:
                if failures:
                    log.info("webhook.delivered_after_retries", webhook=safe_url(url),
                             seq=event.seq, attempts=failures + 1)
                return
            failures += 1
            delay = self.backoff.delay(failures, self._rng)
            log.warning("webhook.delivery_failed", webhook=safe_url(url), seq=event.seq,
                        status=reply.status, error=reply.error, attempt=failures,
                        retry_in_s=round(delay, 2))
            await self._sleep(delay)
