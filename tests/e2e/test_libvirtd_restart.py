"""libvirtd killed and started again under a running agent: its servers show UNKNOWN while
libvirt cannot be asked, then their true states again (ACTIVE stays ACTIVE, SHUTOFF stays
SHUTOFF), nothing is lost, the guest kept running through it, and actions work again.

libvirtd runs by hand on the build machines (`libvirtd -d`, see HOST-NOTES.md): the test
kills it (SIGKILL) and starts it the same way; it is started again whatever happens. On a
host where systemd owns libvirtd the test is skipped (it would fight systemd)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.acting import ServerUnderTest, module_daemon, virsh
from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e


def libvirtd_pid() -> int | None:
    """The running libvirtd (a killed one may linger as a zombie until it is reaped)."""
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True,
                         check=False).stdout.split()
    for pid in map(int, out):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            return pid
    return None


def libvirt_answers() -> bool:
    return subprocess.run(["virsh", "-q", "version"], capture_output=True,
                          check=False).returncode == 0


def start_libvirtd(timeout: float = 30) -> None:
    """Start libvirtd as it was started (`libvirtd -d`) unless one runs; wait until it
    answers."""
    deadline = time.monotonic() + timeout
    while not libvirt_answers():
        if libvirtd_pid() is None:
            subprocess.run(["libvirtd", "-d"], check=True, cwd="/")
        assert time.monotonic() < deadline, "libvirtd did not come back"
        time.sleep(0.5)


def kill_libvirtd(timeout: float = 10) -> None:
    pid = libvirtd_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while libvirtd_pid() == pid:
        assert time.monotonic() < deadline, "libvirtd did not die"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def agent() -> Iterator[Daemon]:
    pid = libvirtd_pid()
    if pid is None or os.path.exists("/run/systemd/system"):
        pytest.skip("libvirtd is not a process this test may restart by hand")
    with module_daemon() as daemon:
        yield daemon


def wait_statuses(daemon: Daemon, want: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    with daemon.client() as api:
        while time.monotonic() < deadline:
            seen = {s["id"]: s["status"] for s in api.get("/servers/detail").json()["servers"]}
            if all(seen.get(i) == status for i, status in want.items()):
                return
            time.sleep(0.1)
    raise AssertionError(f"wanted {want}, seen {seen}")


def test_libvirtd_killed_and_restarted(agent):
    with agent.client() as api:  # two at once: they share one appliance launch
        ids = [api.post("/servers", json={"server": {
            "name": f"lv-{i}", "imageRef": "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11",
            "flavorRef": "1", "adminPass": "Kept-Passw0rd"}}).json()["server"]["id"]
            for i in range(2)]
    running, stopped = (ServerUnderTest(agent, i, "Kept-Passw0rd") for i in ids)
    running.wait("ACTIVE", timeout=300)
    stopped.wait("ACTIVE", timeout=300)
    stopped.act({"os-stop": None})
    stopped.wait("SHUTOFF")
    with running.shell() as con:
        con.run("echo still-here > /tmp/marker")
    since = running.last_seq()

    killed_at = time.monotonic()
    try:
        kill_libvirtd()
        wait_statuses(agent, {running.id: "UNKNOWN", stopped.id: "UNKNOWN"}, timeout=30)
        shown = running.show()
        assert shown["OS-EXT-STS:vm_state"] == "unknown"
        r = running.act({"reboot": {"type": "HARD"}}, status=409)  # nothing to act on now
        assert "UNKNOWN" in r.json()["conflictingRequest"]["message"]
    finally:
        start_libvirtd()
    wait_statuses(agent, {running.id: "ACTIVE", stopped.id: "SHUTOFF"}, timeout=60)

    assert running.statuses_since(since) == ["UNKNOWN", "ACTIVE"]
    assert stopped.statuses_since(since) == ["UNKNOWN", "SHUTOFF"]
    assert virsh("domstate", running.id).strip() == "running"
    assert virsh("domstate", stopped.id).strip() == "shut off"
    with running.shell(booted=False) as con:  # the same guest: it ran on meanwhile
        rc, out = con.run("cat /tmp/marker")
        assert (rc, out.strip()) == (0, "still-here")
        assert running.uptime(con) > time.monotonic() - killed_at
    running.act({"reboot": {"type": "HARD"}})  # and the agent acts through libvirt again
    running.wait("ACTIVE")
    stopped.act({"os-start": None})
    stopped.wait("ACTIVE")
