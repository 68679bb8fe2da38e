"""The real daemon reports status changes: a guest that powers itself off shows ACTIVE then
SHUTOFF, in seq order, on the server-sent event stream, on the long poll and at a webhook
receiver on loopback; and with the receiver down while the daemon is killed (SIGKILL), the
undelivered events arrive after the restart, none lost."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_power_monitor import boot, poweroff_inside
from tests.support.daemon import TOKENS, Daemon, destroy_domains, free_port, query_store
from tests.support.webhook_receiver import Receiver

HOOK_PATH = "/hooks/compute?key=e2e-webhook-secret"


@pytest.fixture
def receiver_port() -> int:
    return free_port()


@pytest.fixture
def daemon(guest_dir: Path, receiver_port: int) -> Iterator[Daemon]:
    d = Daemon(guest_dir / "state", extra_config=(
        "webhook_backoff_initial_s = 0.2\nwebhook_backoff_max_s = 1.0\n"
        f'[[webhooks]]\nurl = "http://127.0.0.1:{receiver_port}{HOOK_PATH}"\ntimeout_s = 5\n'))
    d.start()
    yield d
    d.kill()
    destroy_domains(d.state_dir)


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout}s")


class StreamReader(threading.Thread):
    """Reads the daemon's event stream (text/event-stream) into `events` until closed."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon=True)
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.client = httpx.Client(base_url=daemon.url + "/v2.1", timeout=httpx.Timeout(5, read=60),
                                   headers={"X-Auth-Token": TOKENS["alice"][0]})
        self.ready = threading.Event()
        self.ended_cleanly = False  # the server ended the stream (not an error, not us)

    def run(self) -> None:
        with contextlib.suppress(httpx.HTTPError), self.client.stream(
                "GET", "/os-server-events", headers={"Accept": "text/event-stream"}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            self.ready.set()
            seq = None
            for line in r.iter_lines():
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("data: ") and seq is not None:
                    self.events.append((seq, json.loads(line[6:])))
            self.ended_cleanly = True

    def close(self) -> None:
        self.client.close()


def statuses(events: list[tuple[int, dict[str, Any]]], server_id: str) -> list[str]:
    return [body["new_status"] for _, body in events if body["server_id"] == server_id]


def long_poll_until(daemon: Daemon, since: int, server_id: str, status: str,
                    timeout: float) -> list[dict[str, Any]]:
    """Long polls (wait=30) from `since` until `status` of the server shows; the events."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with daemon.client() as api:
        while time.monotonic() < deadline:
            r = api.get("/os-server-events", params={"since": since, "wait": 30}, timeout=60)
            assert r.status_code == 200, r.text
            seen += r.json()["events"]
            since = r.json()["last_seq"]
            if any(e["server_id"] == server_id and e["new_status"] == status for e in seen):
                return seen
    raise AssertionError(f"long poll: no {status} after {timeout}s; saw {seen}")


def test_poweroff_reaches_the_stream_the_long_poll_and_a_webhook_in_order(daemon, receiver_port):
    receiver = Receiver(port=receiver_port)
    stream = StreamReader(daemon)
    stream.start()
    try:
        assert stream.ready.wait(30), "the event stream did not start"
        server_id, password = boot(daemon)
        with daemon.client() as api:
            since = api.get("/os-server-events").json()["last_seq"]
        polled: list[dict[str, Any]] = []  # in a thread: waiting when the guest powers off
        poller = threading.Thread(target=lambda: polled.extend(
            long_poll_until(daemon, since, server_id, "SHUTOFF", timeout=300)), daemon=True)
        poller.start()
        poweroff_inside(daemon, server_id, password)
        poller.join(320)
        assert [e["new_status"] for e in polled if e["server_id"] == server_id] == ["SHUTOFF"]

        wait_for("SHUTOFF on the stream", lambda: "SHUTOFF" in statuses(stream.events, server_id), 30)
        assert statuses(stream.events, server_id) == ["BUILD", "ACTIVE", "SHUTOFF"]
        seqs = [seq for seq, _ in stream.events]
        assert seqs == sorted(set(seqs)) and all(seq == body["seq"] for seq, body in stream.events)

        wait_for("SHUTOFF at the webhook",
                 lambda: "SHUTOFF" in statuses(receiver.acknowledged(), server_id), 30)
        hooked = receiver.acknowledged()
        assert statuses(hooked, server_id)[-2:] == ["ACTIVE", "SHUTOFF"]
        assert [seq for seq, _ in hooked] == sorted({seq for seq, _ in hooked})
        streamed = dict(stream.events)  # the same event is the same JSON everywhere
        assert all(body == streamed[seq] for seq, body in hooked if seq in streamed)
    finally:
        stream.close()
        receiver.close()

    # The receiver is down: the delete's events cannot be delivered; then SIGKILL.
    with daemon.client() as api:
        assert api.delete(f"/servers/{server_id}").status_code == 204
    daemon.wait_status(server_id, {"DELETED"}, timeout=120)
    [last] = query_store(daemon.state_dir, "SELECT MAX(seq) AS seq FROM events")
    time.sleep(1.0)  # a few refused deliveries and backoffs
    daemon.kill()
    [cursor] = query_store(daemon.state_dir, "SELECT seq FROM webhook_cursors")
    assert cursor["seq"] < last["seq"]  # nothing of the delete was acknowledged

    receiver = Receiver(port=receiver_port)
    try:
        daemon.start()
        wait_for("the delete at the webhook after the restart",
                 lambda: "DELETED" in statuses(receiver.acknowledged(), server_id), 60)
        events = query_store(daemon.state_dir, "SELECT seq FROM events WHERE seq > ? ORDER BY seq",
                             cursor["seq"])
        delivered = [seq for seq, _ in receiver.acknowledged()]
        # Every event after the durable cursor, in order; none lost.
        assert delivered[:len(events)] == [e["seq"] for e in events]
    finally:
        receiver.close()
    assert "e2e-webhook-secret" not in daemon.log()


def test_sighup_adds_and_removes_webhooks_live(daemon, receiver_port):
    old = f"http://127.0.0.1:{receiver_port}{HOOK_PATH}"
    new = f"http://127.0.0.1:{free_port()}/hooks/new?key=e2e-new-secret"

    def cursors() -> set[str]:
        return {r["url"] for r in query_store(daemon.state_dir, "SELECT url FROM webhook_cursors")}

    wait_for("the configured webhook's cursor", lambda: cursors() == {old}, 30)
    daemon.config_file.write_text(daemon.config_file.read_text().replace(old, new))
    pid = daemon.proc.pid
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for("the new webhook's cursor", lambda: new in cursors(), 30)
    wait_for("the old webhook stopped", lambda: '"webhook.removed"' in daemon.log(), 30)
    assert daemon.proc.poll() is None and daemon.proc.pid == pid
    assert "e2e-new-secret" not in daemon.log() and "e2e-webhook-secret" not in daemon.log()
    # An open event stream does not hold up a stop: the daemon ends it cleanly (the chunked
    # body is terminated, not cut when uvicorn gives up waiting).
    stream = StreamReader(daemon)
    stream.start()
    try:
        assert stream.ready.wait(30)
        assert daemon.stop(timeout=30) == 0
        stream.join(30)
        assert stream.ended_cleanly
    finally:
        stream.close()
