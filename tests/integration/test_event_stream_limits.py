"""The real daemon's event feed (no guest needed): streams past the per-token cap get a 429
while another token still gets its own, and a token revoked by SIGHUP loses its open
stream at once (it does not wait for the next event)."""

from __future__ import annotations

import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import GUEST_SCRATCH
from tests.support.daemon import TOKENS, Daemon

pytestmark = pytest.mark.integration

GENEROUS_S = 30.0
SSE = {"Accept": "text/event-stream"}
URL = "/v2.1/os-server-events"


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    GUEST_SCRATCH.mkdir(mode=0o755, exist_ok=True)
    root = GUEST_SCRATCH / uuid.uuid4().hex[:12]
    (root / "state").mkdir(parents=True)
    d = Daemon(root / "state", extra_config="event_streams_per_token = 2\nevent_streams_max = 10")
    d.start()
    try:
        yield d
    finally:
        d.kill()
        shutil.rmtree(root, ignore_errors=True)


def read_stream(daemon: Daemon, user: str, opened: threading.Event) -> tuple[int, bytes]:
    """Open a stream (`opened` is set once its answer has begun) and read it until the
    daemon ends it: its status and body."""
    with httpx.Client(base_url=daemon.url, timeout=GENEROUS_S) as c, c.stream(
            "GET", URL, headers={"X-Auth-Token": TOKENS[user][0], **SSE}) as r:
        opened.set()
        return r.status_code, b"".join(r.iter_raw())


def test_streams_past_the_per_token_cap_are_a_429_and_a_revoked_token_loses_its_streams(daemon: Daemon):
    alice, bob = TOKENS["alice"][0], TOKENS["bob"][0]
    with ThreadPoolExecutor(3) as pool, httpx.Client(base_url=daemon.url, timeout=GENEROUS_S) as c:
        opened = [threading.Event() for _ in range(3)]
        held = [pool.submit(read_stream, daemon, "alice", opened[i]) for i in range(2)]
        bobs = pool.submit(read_stream, daemon, "bob", opened[2])
        assert all(e.wait(GENEROUS_S) for e in opened)  # all three streams hold their slots
        r = c.get(URL, headers={"X-Auth-Token": alice, **SSE})
        assert r.status_code == 429
        assert r.json()["overLimit"]["code"] == 429 and "Retry-After" in r.headers
        polled = c.get(URL, params={"wait": 0}, headers={"X-Auth-Token": alice})
        assert polled.status_code == 200  # a plain page needs no slot

        # SIGHUP with alice's token gone: her streams end now, bob's goes on.
        config = daemon.config_file.read_text().replace(alice, "tok-alice-rotated-98765")
        daemon.config_file.write_text(config)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        for f in held:
            status, _body = f.result(timeout=GENEROUS_S)
            assert status == 200
        assert not bobs.done()
        assert c.get(URL, headers={"X-Auth-Token": alice}).status_code == 401
        daemon.proc.send_signal(signal.SIGTERM)  # ends bob's stream too
        assert bobs.result(timeout=GENEROUS_S)[0] == 200
        assert bob not in daemon.log() and alice not in daemon.log()
