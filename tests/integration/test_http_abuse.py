"""Hostile HTTP against the real daemon's TCP listener (`python -m agent serve`, as
tests/support/daemon.py starts it): each bound of agent/adapters/http_guard.py on its own,
then all of them at once while another client's requests keep being answered.

- a request line streamed without end: 414 after 8 KiB, the rest never read;
- a header streamed without end: 431; a head trickled a byte at a time: 408 at the
  header timeout; a body never finished: 408 at the body timeout;
- idle connections past the per-address cap: 429 and closed at once; the ones held: closed
  at the header timeout; past the listener's cap (several addresses): 503;
- catastrophic-backtracking name patterns: answered (RE2), the loop never frozen;
- all together (1,000 idle connections among them): a second client from another address
  gets every answer, no 5xx, and the daemon's RSS stays under 150 MiB.

No timed assertion: deadlines are generous bounds on "it happens" (latency under abuse is
the bench's abuse figure)."""

from __future__ import annotations

import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import GUEST_SCRATCH
from tests.support.abuse import (
    EVIL_NAME,
    EVIL_PATTERNS,
    RssSampler,
    _answer,
    _connect,
    idle_connections,
    polling_client,
    raise_fd_limit,
    regex_tenant,
    seed_evil_server,
    slow_head,
    stream_head,
)
from tests.support.daemon import TOKENS, Daemon

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 3
PER_CLIENT = 64
PER_LISTENER = 300
CONFIG = (f"[http]\nheader_timeout_s = {HEADER_TIMEOUT_S}\nbody_timeout_s = {BODY_TIMEOUT_S}\n"
          f"max_connections = {PER_LISTENER}\nmax_connections_per_client = {PER_CLIENT}\n")
RSS_LIMIT_MIB = 150
MIB = 1024 * 1024
GENEROUS_S = 30  # a bound on "it happens", never a measure of speed


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    raise_fd_limit(4096)
    GUEST_SCRATCH.mkdir(mode=0o755, exist_ok=True)
    root = GUEST_SCRATCH / uuid.uuid4().hex[:12]  # as guest_dir: console paths must fit
    state = root / "state"
    state.mkdir(parents=True)
    seed_evil_server(state / "agent.db", TOKENS["alice"][1])
    d = Daemon(state, extra_config=CONFIG).start()
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_an_endless_request_line_is_a_414_and_not_read_further(daemon: Daemon):
    done = stream_head(daemon.port, b"GET /", 64 * MIB)
    assert done.sent < 32 * MIB  # the server stopped reading (the rest sat in socket buffers)
    assert done.status in (414, None)  # None: reset before the answer was read back
    assert stream_head(daemon.port, b"GET /" + b"a" * 9000, 0).status == 414


def test_an_endless_header_is_a_431_and_not_read_further(daemon: Daemon):
    done = stream_head(daemon.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 64 * MIB)
    assert done.sent < 32 * MIB and done.status in (431, None)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
    assert stream_head(daemon.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many, 0).status == 431


def test_a_trickled_head_is_a_408_at_the_header_timeout(daemon: Daemon):
    assert slow_head(daemon.port, pause_s=0.3, timeout=GENEROUS_S) == 408


def test_a_body_that_never_ends_is_a_408_at_the_body_timeout(daemon: Daemon):
    s = _connect(daemon.port)
    try:
        s.sendall(b"POST /v2.1/servers HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
                  + TOKENS["alice"][0].encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"server\":")
        assert _answer(s, GENEROUS_S) == 408
    finally:
        s.close()


def test_a_declared_body_too_large_is_a_413_that_closes_the_connection(daemon: Daemon):
    s = _connect(daemon.port)
    try:
        s.sendall(b"POST /v2.1/servers HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n{")
        assert _answer(s, GENEROUS_S) == 413
        s.settimeout(GENEROUS_S)
        while s.recv(4096):  # the rest of the answer, then the server's close
            pass
    finally:
        s.close()


def test_idle_connections_past_the_per_address_cap_are_refused_and_the_rest_time_out(daemon: Daemon):
    done = idle_connections(daemon.port, PER_CLIENT + 40, wait_s=HEADER_TIMEOUT_S + GENEROUS_S)
    assert done.still_open == 0  # every one closed by the server: none held for good
    assert done.answered[429] >= 40  # at once, past the cap
    assert done.answered[None] + done.answered[429] == PER_CLIENT + 40
    with httpx.Client(base_url=daemon.url, timeout=GENEROUS_S) as c:
        assert c.get("/").status_code == 200  # the address may connect again


def test_connections_past_the_listeners_cap_get_a_503(daemon: Daemon):
    """Many addresses (127.0.0.10-19), each under its own cap, together past the listener's."""
    held: list[socket.socket] = []
    statuses: list[int | None] = []
    try:
        for i in range(PER_LISTENER + 30):
            s = _connect(daemon.port, source=f"127.0.0.{10 + i % 10}")
            held.append(s)
        for s in held[PER_LISTENER:]:
            statuses.append(_answer(s, GENEROUS_S))
    finally:
        for s in held:
            s.close()
    assert statuses.count(503) >= 25  # a few may have taken the place of ones that timed out


def test_catastrophic_name_patterns_are_answered(daemon: Daemon):
    with daemon.client("alice") as c:
        for pattern in EVIL_PATTERNS:
            r = c.get("/servers", params={"name": pattern})
            assert r.status_code == 200 and r.json()["servers"] == []
        found = c.get("/servers", params={"name": "^(a+)+!$"}).json()["servers"]
        assert [s["name"] for s in found] == [EVIL_NAME]


def test_under_all_of_it_another_client_is_answered_and_memory_stays_bounded(daemon: Daemon):
    assert daemon.proc is not None
    sampler = RssSampler(daemon.proc.pid)
    sampler.start()
    stop = threading.Event()
    bob = TOKENS["bob"][0]
    hostile: list[tuple[str, Callable[[], Any]]] = [
        ("idle", lambda: idle_connections(daemon.port, 1000, wait_s=HEADER_TIMEOUT_S + GENEROUS_S)),
        *[(f"url{i}", lambda: stream_head(daemon.port, b"GET /", 32 * MIB)) for i in range(4)],
        *[(f"header{i}", lambda: stream_head(daemon.port, b"GET / HTTP/1.1\r\nX: ", 32 * MIB))
          for i in range(2)],
        *[(f"slow{i}", lambda: slow_head(daemon.port, 0.3, GENEROUS_S)) for i in range(5)],
        ("regex", lambda: regex_tenant(daemon.url, TOKENS["alice"][0], stop)),
    ]
    with ThreadPoolExecutor(len(hostile) + 1) as pool:
        bystander = pool.submit(polling_client, daemon.url, bob, stop,
                                ("/v2.1/flavors", "/v2.1/servers", "/v2.1/servers/detail"),
                                min_requests=30)
        attacks = {name: pool.submit(run) for name, run in hostile}
        results = {name: f.result(timeout=3 * GENEROUS_S)
                   for name, f in attacks.items() if name != "regex"}
        stop.set()
        results["regex"] = attacks["regex"].result(timeout=3 * GENEROUS_S)
        answers = bystander.result(timeout=3 * GENEROUS_S)
    sampler.stop.set()
    sampler.join()

    assert daemon.proc.poll() is None
    assert sum(answers.statuses.values()) >= 30 and set(answers.statuses) == {200}, answers.statuses
    assert sampler.max_mib < RSS_LIMIT_MIB, f"RSS reached {sampler.max_mib:.0f} MiB"
    idle = results["idle"]
    assert idle.still_open == 0 and idle.answered[429] >= 1000 - PER_CLIENT - 50
    for i in range(4):
        assert results[f"url{i}"].sent < 16 * MIB and results[f"url{i}"].status in (414, 429, None)
    assert all(results[f"slow{i}"] in (408, 429) for i in range(5))
    regex = results["regex"]
    assert regex[200] >= 1 and set(regex) == {200}, regex


def test_websocket_sessions_give_their_connection_slot_back(daemon: Daemon):
    """A console WebSocket leaves the HTTP protocol (uvicorn hands the transport to its
    WebSocket one): its place in the per-address cap must still be given back when it
    ends, or PER_CLIENT sessions would lock that address out for good."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    token = TOKENS["alice"][0]
    url = f"ws://127.0.0.1:{daemon.port}/v2.1/servers/{uuid.uuid4()}/console"
    for _ in range(PER_CLIENT + 8):
        with connect(url, additional_headers={"X-Auth-Token": token}, open_timeout=GENEROUS_S) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=GENEROUS_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    r = httpx.get(f"{daemon.url}/v2.1/flavors", headers={"X-Auth-Token": token}, timeout=GENEROUS_S)
    assert r.status_code == 200
