"""The machine's RabbitMQ for tests that take it away: kill it, start it again, and wait
until a new quorum queue would survive that (issue 12).

Only the broker's own tests use this, and every one that kills the broker starts it again
before it ends (other tests on this machine use the same broker): `killed_broker()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

START_TIMEOUT_S = 180.0  # a boot takes ~10 s; far longer on a loaded 2-CPU machine


def _run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")


def broker_answers() -> bool:
    try:
        return _run("rabbitmq-diagnostics", "-q", "ping").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def beam_pid() -> int:
    """The broker's Erlang VM (what a crash or an OOM kill takes away)."""
    found = re.search(r"OS PID: (\d+)", _run("rabbitmqctl", "status").stdout)
    if not found:
        raise RuntimeError("rabbitmqctl status printed no OS PID: is the broker running?")
    return int(found.group(1))


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def start_broker(timeout: float = START_TIMEOUT_S) -> None:
    """Start the broker as setup does (`rabbitmq-server -detached`) unless it answers, and
    return once it has booted (its listeners open only after queue recovery)."""
    if broker_answers():
        return
    _run("rabbitmq-server", "-detached")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # await_startup needs the Erlang node up first: retry until the broker answers.
        if _run("rabbitmqctl", "-q", "await_startup", "--timeout", "5").returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"RabbitMQ did not come back within {timeout:.0f} s")


def kill_broker() -> int:
    """SIGKILL the broker's VM (no clean shutdown, as a crash) and wait until it is gone."""
    pid = beam_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


@contextlib.asynccontextmanager
async def killed_broker() -> AsyncIterator[None]:
    """Kill the broker on entry; whatever happens inside, it is running again on exit.
    Both run in a thread: the clients under test keep running (and reconnecting) meanwhile."""
    await asyncio.to_thread(kill_broker)
    try:
        yield
    finally:
        await asyncio.to_thread(start_broker)


def ra_server_name(vhost: str, queue: str) -> str:
    """The Ra member name RabbitMQ gives a quorum queue (vhost "/" is written %2F)."""
    return f"{vhost.replace('/', '%2F')}_{queue}"


def ra_names_file() -> Path:
    """Where the broker keeps its quorum queues' Ra member names (asked once: ~1 s)."""
    out = _run("rabbitmqctl", "eval", "maps:get(data_dir, ra_system:fetch(quorum_queues)).").stdout
    return Path(out.strip().strip('"')) / "names.dets"


def wait_until_queue_survives_a_crash(vhost: str, queue: str, timeout: float = 60) -> None:
    """Wait until the broker has written a new quorum queue's Ra member name to disk.

    RabbitMQ 3.10 (Ra 2.2) keeps that registration in a dets table (names.dets) that it
    flushes about a second after the queue is declared. A broker killed before then comes
    back with the queue's member unknown ("name_not_registered"), starts it as a brand-new,
    empty member that waits for an election nobody triggers: the queue stays leaderless
    and what it held is orphaned. A host's job queue lives for days, so a test that kills
    the broker waits for this first, as any real queue would have."""
    names = ra_names_file()
    deadline = time.monotonic() + timeout
    while not queue_survives_a_crash(vhost, queue, names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue}: its Ra member is not on disk after {timeout:.0f} s")
        time.sleep(0.1)


def queue_survives_a_crash(vhost: str, queue: str, names: Path) -> bool:
    """Whether the broker has written the quorum queue's Ra member name to disk yet
    (`names`: ra_names_file())."""
    try:
        return ra_server_name(vhost, queue).encode() in names.read_bytes()
    except OSError:
        return False
