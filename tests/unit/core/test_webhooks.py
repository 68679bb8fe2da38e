"""Webhook delivery from the outbox, with a fake sender and a fake sleep: every event in seq
order, retried with capped exponential backoff until a 2xx, the cursor moved only after one,
a new URL from the head, a restart from the cursor, a dead receiver holding up only its own
URL, live reconfiguration, and no secret of a URL in the logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from agent.config import webhook_key
from agent.core.event_feed import EventNotifier
from agent.core.webhooks import SEQ_HEADER, Backoff, WebhookDispatcher, WebhookTarget, safe_url
from agent.model.states import VmState
from agent.protocols import WebhookReply
from tests.unit.core.test_event_feed import add_server, wired
from tests.unit.fakes.store import MemoryStore

LONG = 30.0
A = "http://a.example:8080/hooks/a"
B = "http://b.example/hooks/b"


class FakeSender:
    """Records each POST; answers from `script[url]` (then 200), or with `default(url)`."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, object], dict[str, str], float]] = []
        self.bodies: list[bytes] = []  # as sent, byte for byte
        self.script: dict[str, list[WebhookReply]] = {}
        self.dead: set[str] = set()
        self.closed = False

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> WebhookReply:
        self.posts.append((url, json.loads(body), headers, timeout_s))
        self.bodies.append(body)
        await asyncio.sleep(0)
        if url in self.dead:
            return WebhookReply(status=None, error="ConnectError")
        replies = self.script.get(url)
        return replies.pop(0) if replies else WebhookReply(status=204)

    async def aclose(self) -> None:
        self.closed = True

    def seqs(self, url: str) -> list[int]:
        return [int(body["seq"]) for u, body, _, _ in self.posts if u == url]  # type: ignore[call-overload]


class FakeSleep:
    """Records delays and returns at once; the `hold_at`-th sleep waits for `gate`."""

    def __init__(self, hold_at: int | None = None) -> None:
        self.delays: list[float] = []
        self.hold_at = hold_at
        self.gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) == self.hold_at:
            await self.gate.wait()
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(LONG):
        while not condition():
            await asyncio.sleep(0.005)


def dispatcher(store: MemoryStore, notifier: EventNotifier, sender: FakeSender, sleep: FakeSleep,
               *, rng: float = 0.5) -> WebhookDispatcher:
    return WebhookDispatcher(store, sender, notifier, backoff=Backoff(1.0, 8.0), rng=lambda: rng,
                             sleep=sleep, fallback_poll_s=0.01)


async def test_every_event_is_posted_in_order_as_json_with_its_seq_and_the_cursor_follows():
    store, notifier = wired()
    sender, sleep = FakeSender(), FakeSleep()
    hooks = dispatcher(store, notifier, sender, sleep)
    hooks.configure([WebhookTarget(A, timeout_s=3.0, headers={"Authorization": "Bearer s3cr3t"})])
    await until(lambda: A in hooks.urls)
    await asyncio.sleep(0.02)  # the task has made its cursor at the head (0)
    server = await add_server(store)
    await store.update_server(server.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
    await until(lambda: store.peek_webhook_cursor(A) == 2)
    assert sender.seqs(A) == [1, 2]
    _, body, headers, timeout_s = sender.posts[1]
    assert body["server_id"] == str(server.id)
    assert (body["old_status"], body["new_status"], body["cause"]) == ("BUILD", "ACTIVE", "spawned")
    assert headers[SEQ_HEADER] == "2" and headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cr3t" and timeout_s == 3.0
    await hooks.close()
    assert sender.closed


async def test_failures_are_retried_with_capped_exponential_backoff_and_the_cursor_waits():
    store, notifier = wired()
    sender, sleep = FakeSender(), FakeSleep(hold_at=5)
    sender.script[A] = [WebhookReply(status=500), WebhookReply(status=None, error="ConnectError"),
                        WebhookReply(status=302), WebhookReply(status=404), WebhookReply(status=503),
                        WebhookReply(status=200)]
    hooks = dispatcher(store, notifier, sender, sleep, rng=1.0)
    await store.advance_webhook_cursor(A, 0)  # an existing cursor: delivery starts after seq 0
    await add_server(store)
    await add_server(store)
    hooks.configure([WebhookTarget(A)])
    await until(lambda: len(sleep.delays) == 5)  # held in the fifth backoff
    assert store.peek_webhook_cursor(A) == 0  # nothing acknowledged yet
    sleep.gate.set()
    await until(lambda: store.peek_webhook_cursor(A) == 2)
    # Event 1 six times (five failures, then a 200), then event 2 once; never 2 before 1.
    assert sender.seqs(A) == [1, 1, 1, 1, 1, 1, 2]
    assert [h["X-Compute-Agent-Delivery-Attempt"] for _, _, h, _ in sender.posts[:6]] == [
        "1", "2", "3", "4", "5", "6"]
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped at 8 (jitter at its top)
    await hooks.close()


def test_jitter_keeps_a_delay_between_half_and_all_of_its_ceiling():
    backoff = Backoff(initial_s=1.0, max_s=60.0)
    assert backoff.delay(1, lambda: 0.0) == 0.5
    assert backoff.delay(3, lambda: 0.0) == 2.0 and backoff.delay(3, lambda: 1.0) == 4.0
    assert backoff.delay(100, lambda: 0.5) == 45.0  # capped: between 30 and 60
    assert backoff.delay(10_000, lambda: 1.0) == 60.0  # no overflow however many failures


async def test_a_new_webhook_starts_from_the_head_not_the_history():
    store, notifier = wired()
    for _ in range(3):
        await add_server(store)
    sender, sleep = FakeSender(), FakeSleep()
    hooks = dispatcher(store, notifier, sender, sleep)
    hooks.configure([WebhookTarget(A)])
    await until(lambda: store.peek_webhook_cursor(A) == 3)
    await add_server(store)
    await until(lambda: store.peek_webhook_cursor(A) == 4)
    assert sender.seqs(A) == [4]
    await hooks.close()


async def test_delivery_resumes_from_the_cursor_after_a_restart():
    store, notifier = wired()
    for _ in range(2):
        await add_server(store)
    await store.advance_webhook_cursor(A, 0)
    sender, sleep = FakeSender(), FakeSleep()
    sender.dead.add(A)  # the receiver is down: nothing is acknowledged before the "crash"
    first = dispatcher(store, notifier, sender, sleep)
    first.configure([WebhookTarget(A)])
    await until(lambda: len(sender.posts) >= 2)
    await first.close()
    assert store.peek_webhook_cursor(A) == 0
    await add_server(store)  # an event while the agent is down
    sender.dead.clear()
    sender.posts.clear()
    second = dispatcher(store, notifier, sender, sleep)
    second.configure([WebhookTarget(A)])
    await until(lambda: store.peek_webhook_cursor(A) == 3)
    assert sender.seqs(A) == [1, 2, 3]
    await second.close()


async def test_a_dead_receiver_does_not_hold_up_the_others():
    store, notifier = wired()
    sender, sleep = FakeSender(), FakeSleep()
    sender.dead.add(A)
    await store.advance_webhook_cursor(A, 0)
    await store.advance_webhook_cursor(B, 0)
    hooks = dispatcher(store, notifier, sender, sleep)
    hooks.configure([WebhookTarget(A), WebhookTarget(B)])
    for _ in range(3):
        await add_server(store)
    await until(lambda: store.peek_webhook_cursor(B) == 3)
    assert sender.seqs(B) == [1, 2, 3]
    assert set(sender.seqs(A)) == {1} and store.peek_webhook_cursor(A) == 0
    await hooks.close()


async def test_reconfiguring_stops_removed_urls_and_kept_ones_take_new_options():
    store, notifier = wired()
    sender, sleep = FakeSender(), FakeSleep()
    hooks = dispatcher(store, notifier, sender, sleep)
    await store.advance_webhook_cursor(A, 0)
    await store.advance_webhook_cursor(B, 0)
    hooks.configure([WebhookTarget(A), WebhookTarget(B)])
    await add_server(store)
    await until(lambda: store.peek_webhook_cursor(A) == 1 and store.peek_webhook_cursor(B) == 1)
    hooks.configure([WebhookTarget(A, timeout_s=7.0, headers={"X-Tag": "new"})])
    assert hooks.urls == [A]
    await add_server(store)
    await until(lambda: store.peek_webhook_cursor(A) == 2)
    await asyncio.sleep(0.05)
    assert sender.seqs(B) == [1] and store.peek_webhook_cursor(B) == 1
    _, _, headers, timeout_s = sender.posts[-1]
    assert headers["X-Tag"] == "new" and timeout_s == 7.0
    await hooks.close()


async def test_a_store_failure_pauses_delivery_and_it_carries_on_from_the_cursor():
    store, notifier = wired()
    await add_server(store)
    await store.advance_webhook_cursor(A, 0)
    real = store.events_since
    failures = [RuntimeError("database is locked")]

    def flaky(seq: int, project_id: str | None = None, limit: int = 1000):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return real(seq, project_id, limit)

    store.events_since = flaky  # type: ignore[method-assign]
    sender, sleep = FakeSender(), FakeSleep()
    hooks = dispatcher(store, notifier, sender, sleep)
    with capture_logs() as logs:
        hooks.configure([WebhookTarget(A)])
        await until(lambda: store.peek_webhook_cursor(A) == 1)
    assert sender.seqs(A) == [1] and len(sleep.delays) == 1
    assert any(e["event"] == "webhook.loop_failed" for e in logs)
    await hooks.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pa55@hooks.example:8443/t/SECRET?key=SECRET", "https://hooks.example:8443"),
    ("http://127.0.0.1/SECRET", "http://127.0.0.1"),
    ("http://[::1]:9000/SECRET", "http://[::1]:9000"),
])
def test_logs_show_a_url_without_user_info_path_or_query(url: str, shown: str):
    assert safe_url(url) == shown


async def test_failed_deliveries_log_no_secret_of_the_url_or_headers():
    store, notifier = wired()
    sender, sleep = FakeSender(), FakeSleep()
    url = "http://user:pa55w0rd@hooks.example/t/TOKENPATH?key=QUERYKEY"
    sender.script[url] = [WebhookReply(status=500)]
    await store.advance_webhook_cursor(url, 0)
    await add_server(store)
    hooks = dispatcher(store, notifier, sender, sleep)
    with capture_logs() as logs:
        hooks.configure([WebhookTarget(url, headers={"Authorization": "Bearer HEADERSECRET"})])
        await until(lambda: store.peek_webhook_cursor(url) == 1)
        await hooks.close()
    text = repr(logs)
    assert "webhook.delivery_failed" in text and "hooks.example" in text
    for secret in ("pa55w0rd", "TOKENPATH", "QUERYKEY", "HEADERSECRET"):
        assert secret not in text


async def test_delivery_tasks_end_by_themselves_once_the_notifier_is_closed():
    """The daemon closes the notifier when it stops: no task may spin on a wait that no
    longer blocks (that starved the daemon's shutdown once)."""
    store, notifier = wired()
    hooks = dispatcher(store, notifier, FakeSender(), FakeSleep())
    hooks.configure([WebhookTarget(A), WebhookTarget(B)])
    await until(lambda: store.peek_webhook_cursor(A) == 0 and store.peek_webhook_cursor(B) == 0)
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("webhook ")]
    assert len(tasks) == 2
    notifier.close()
    await asyncio.wait_for(asyncio.gather(*tasks), LONG)
    await hooks.close()


SIGNING_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def receiver_verifies(secret: str, headers: dict[str, str], body: bytes, now: int,
                      tolerance_s: int = 300) -> bool:
    """What a Standard Webhooks receiver does: the key is the base64 after "whsec_"; the
    signed content is "{webhook-id}.{webhook-timestamp}.{body}"; any "v1,<base64>" of the
    space-separated signatures must match, and the timestamp must be recent."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    fresh = abs(now - int(headers["webhook-timestamp"])) <= tolerance_s
    return fresh and any(sig.split(",", 1) == ["v1", expected]
                         for sig in headers["webhook-signature"].split())


async def test_a_signed_webhook_verifies_as_the_standard_webhooks_spec_says_and_forgeries_do_not():
    store, notifier = wired()
    sender, sleep = FakeSender(), FakeSleep()
    clock = [1_790_000_000.7]
    sender.script[A] = [WebhookReply(status=500)]  # one retry: same id, fresh timestamp
    hooks = WebhookDispatcher(store, sender, notifier, backoff=Backoff(1.0, 8.0), sleep=sleep,
                              fallback_poll_s=0.01, clock=lambda: clock[0],
                              message_id_prefix="evt-hv1-")
    await store.advance_webhook_cursor(A, 0)
    await add_server(store)
    with capture_logs() as logs:
        hooks.configure([WebhookTarget(A, secret=webhook_key(SIGNING_SECRET)), WebhookTarget(B)])
        await until(lambda: store.peek_webhook_cursor(A) == 1 and B in hooks.urls)
        await asyncio.sleep(0.02)  # B has made its cursor at the head (1)
        clock[0] += 1
        await add_server(store)
        await until(lambda: store.peek_webhook_cursor(A) == 2 and store.peek_webhook_cursor(B) == 2)
        await hooks.close()
    signed = [(h, body) for (url, _, h, _), body in zip(sender.posts, sender.bodies, strict=True)
              if url == A]
    assert [h["webhook-id"] for h, _ in signed] == ["evt-hv1-1", "evt-hv1-1", "evt-hv1-2"]
    now = int(clock[0])
    for headers, body in signed:
        assert receiver_verifies(SIGNING_SECRET, headers, body, now)
    headers, body = signed[-1]
    assert headers["webhook-timestamp"] == str(now)
    assert not receiver_verifies(SIGNING_SECRET, headers, body.replace(b"BUILD", b"ERROR"), now)
    assert not receiver_verifies(SIGNING_SECRET, {**headers, "webhook-id": "evt-hv1-1"}, body, now)
    assert not receiver_verifies(SIGNING_SECRET, headers, body, now + 3600)  # a replay, later
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert not receiver_verifies(other, headers, body, now)
    unsigned = [h for url, _, h, _ in sender.posts if url == B]
    assert unsigned and not any("webhook-signature" in h for h in unsigned)
    text = repr(logs)
    assert "webhook.unsigned" in text and SIGNING_SECRET.removeprefix("whsec_") not in text
    assert "kkkk" not in repr(hooks._targets)
