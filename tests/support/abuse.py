"""Hostile HTTP against a real daemon's TCP listener, and a well-behaved client beside it:
shared by the abuse test (tests/integration/test_http_abuse.py, which asserts behaviour)
and the bench's abuse figure (bench/abuse.py, which measures the well-behaved client's
latency). Only loopback addresses; every loop is bounded in count and time.

The hostile workers come from 127.0.0.1; the well-behaved client from 127.0.0.2, another
peer address (a connection cap per address must not make it pay for the attacker)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import select
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from agent.adapters.sqlite_store import SqliteStore
from agent.model.domain import PowerState
from agent.model.job import Job, JobKind, JobStatus
from agent.model.server import Server
from agent.model.states import VmState

ATTACKER = "127.0.0.1"
BYSTANDER = "127.0.0.2"
TENANT = "127.0.0.3"  # a tenant with a token and hostile name patterns
EVIL_NAME = "a" * 40 + "!"  # ^(a+)+$ takes a backtracking engine 2**40 steps on it
EVIL_PATTERNS = ("^(a+)+$", "^(a|aa)+$", "(a*)*b", "^(a|a?)+$")
CHUNK = 64 * 1024


def raise_fd_limit(wanted: int) -> None:
    """This process must hold `wanted` sockets at once (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def seed_evil_server(db: Path, project_id: str) -> None:
    """A server named EVIL_NAME in `project_id`, written before the daemon starts (no build:
    the start-up reconcile marks it, the name stays)."""
    store = SqliteStore(db)
    try:
        now = datetime.now(UTC)
        sid = uuid.uuid4()
        asyncio.run(store.create_server(
            Server(id=sid, project_id=project_id, user_id="seed", name=EVIL_NAME,
                   image_id=uuid.uuid4(), flavor_id="1", vm_state=VmState.ACTIVE, task_state=None,
                   power_state=PowerState.RUNNING, progress=100, created_at=now, updated_at=now,
                   launched_at=now),
            Job(id=uuid.uuid4(), server_id=sid, kind=JobKind.CREATE, status=JobStatus.SUCCEEDED,
                step="done", created_at=now, updated_at=now)))
    finally:
        store.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class RssSampler(threading.Thread):
    """The daemon's largest resident size seen, sampled every `interval` s until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.max_mib = rss_mib(pid)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(OSError, RuntimeError):
                self.max_mib = max(self.max_mib, rss_mib(self.pid))


def _status_of(answer: bytes) -> int | None:
    """The status code of an HTTP answer's first line, or None (no answer)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None


def _connect(port: int, source: str = ATTACKER, timeout: float = 10) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _answer(s: socket.socket, timeout: float) -> int | None:
    """The status the server answered before closing (None: closed or reset without one)."""
    s.settimeout(timeout)
    try:
        return _status_of(s.recv(4096))
    except OSError:
        return None


@dataclass
class Streamed:
    """What streaming an endless head did: bytes the server took before it stopped
    reading, and its answer."""

    sent: int
    status: int | None


def stream_head(port: int, prefix: bytes, total: int, timeout: float = 20) -> Streamed:
    """Send `prefix` then up to `total` bytes of 'a' (a request line or header that never
    ends), until the server closes; then read its answer."""
    s = _connect(port)
    sent = 0
    try:
        s.sendall(prefix)
        chunk = b"a" * CHUNK
        deadline = time.monotonic() + timeout
        while sent < total and time.monotonic() < deadline:
            try:
                s.sendall(chunk)
            except OSError:  # the server closed (EPIPE, ECONNRESET) or stopped reading
                break
            sent += len(chunk)
        return Streamed(sent, _answer(s, timeout))
    finally:
        s.close()


def slow_head(port: int, pause_s: float, timeout: float) -> int | None:
    """A head trickled one byte every `pause_s` (it never ends): the server's answer."""
    s = _connect(port)
    try:
        s.setblocking(False)
        deadline = time.monotonic() + timeout
        for byte in b"GET /v2.1/flavors HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 10_000:
            readable, _, _ = select.select([s], [], [], pause_s)
            if readable or time.monotonic() > deadline:
                break
            try:
                s.send(bytes([byte]))
            except OSError:
                break
        return _answer(s, timeout)
    finally:
        s.close()


@dataclass
class IdleRound:
    opened: int = 0
    answered: Counter[int | None] = field(default_factory=Counter)  # status -> connections
    still_open: int = 0  # when the round ended: not closed by the server by then


def idle_connections(port: int, count: int, wait_s: float) -> IdleRound:
    """Open `count` connections that never send a byte; wait up to `wait_s` for the server
    to close them, and count how each ended (429/503: refused at once; None: closed
    without an answer, as an idle connection is)."""
    out = IdleRound()
    socks: dict[int, socket.socket] = {}
    poller = select.poll()
    try:
        for _ in range(count):
            try:
                s = _connect(port)
            except OSError:
                out.answered[-1] += 1  # not even connected (backlog full): refused too
                continue
            socks[s.fileno()] = s
            poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
            out.opened += 1
        deadline = time.monotonic() + wait_s
        while socks and time.monotonic() < deadline:
            for fd, _event in poller.poll(200):
                s = socks.pop(fd, None)
                if s is None:
                    continue
                poller.unregister(fd)
                out.answered[_answer(s, 1)] += 1
                s.close()
        out.still_open = len(socks)
    finally:
        for s in socks.values():
            s.close()
    return out


@dataclass
class Answers:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int | str] = field(default_factory=Counter)


def polling_client(url: str, token: str, stop: threading.Event, paths: tuple[str, ...],
                   source: str = BYSTANDER, pause_s: float = 0.05, timeout: float = 30,
                   max_requests: int = 100_000, min_requests: int = 0) -> Answers:
    """GET the paths in turn (a pause after each answer), from `source`, until `stop` (and
    at least `min_requests`); every answer's latency and status ("error": no answer)."""
    out = Answers()
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, headers={"X-Auth-Token": token}, timeout=timeout,
                      transport=transport) as client:
        i = 0
        while (not stop.is_set() or i < min_requests) and i < max_requests:
            started = time.perf_counter()
            try:
                status: int | str = client.get(paths[i % len(paths)]).status_code
            except httpx.TransportError as e:
                status = f"error {type(e).__name__}"
            out.latencies_ms.append((time.perf_counter() - started) * 1000)
            out.statuses[status] += 1
            i += 1
            stop.wait(pause_s)
    return out


def regex_tenant(url: str, token: str, stop: threading.Event, timeout: float = 60,
                 source: str = TENANT) -> Counter[int | str]:
    """A tenant listing its servers with catastrophic-backtracking name patterns."""
    statuses: Counter[int | str] = Counter()
    with httpx.Client(base_url=url, headers={"X-Auth-Token": token}, timeout=timeout,
                      transport=httpx.HTTPTransport(local_address=source)) as client:
        i = 0
        while not stop.is_set() and i < 10_000:
            try:
                r = client.get("/v2.1/servers", params={"name": EVIL_PATTERNS[i % len(EVIL_PATTERNS)]})
                statuses[r.status_code] += 1
            except httpx.TransportError as e:
                statuses[f"error {type(e).__name__}"] += 1
            i += 1
            stop.wait(0.02)
    return statuses
