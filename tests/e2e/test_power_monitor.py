"""A guest that powers itself off shows SHUTOFF within a second, as an event and in the
API; with shutdown_terminate it is deleted instead."""

from __future__ import annotations

import contextlib
import subprocess
import time

from tests.e2e.conftest import IMAGE_ID
from tests.support.console import ConsoleError, SerialConsole


def boot(daemon, **extra) -> tuple[str, str]:
    with daemon.client() as api:
        r = api.post("/servers", json={"server": {"name": "mon", "imageRef": IMAGE_ID,
                                                  "flavorRef": "1", **extra}})
    assert r.status_code == 202, r.text
    created = r.json()["server"]
    server = daemon.wait_status(created["id"], {"ACTIVE", "ERROR"}, timeout=240)
    assert server["status"] == "ACTIVE", server.get("fault")
    return created["id"], created["adminPass"]


def poweroff_inside(daemon, server_id: str, password: str) -> float:
    """Log in, type poweroff; returns the monotonic time the command was sent."""
    d = daemon.state_dir / "instances" / server_id
    with SerialConsole(d / "console.sock", d / "console.log") as con:
        con.wait_for(r"CA-GUEST booted", timeout=180)
        con.login("root", password)
        sent = time.monotonic()
        with contextlib.suppress(ConsoleError):  # the shell may die before it answers
            con.run("poweroff", timeout=30)
        return sent


def wait_api_status(daemon, server_id: str, status: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    with daemon.client() as api:
        while time.monotonic() < deadline:
            r = api.get(f"/servers/{server_id}")
            if (r.status_code == 404 and status == "DELETED") or \
                    (r.status_code == 200 and r.json()["server"]["status"] == status):
                return time.monotonic()
            time.sleep(0.05)
    raise AssertionError(f"{server_id} never {status}")


def domain_gone_at(server_id: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["virsh", "domstate", server_id], capture_output=True, text=True,
                             check=False).stdout
        if "running" not in out:
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError("guest did not power off")


def test_guest_poweroff_shows_shutoff_within_a_second(daemon):
    server_id, password = boot(daemon)
    poweroff_inside(daemon, server_id, password)
    off = domain_gone_at(server_id, timeout=60)
    seen = wait_api_status(daemon, server_id, "SHUTOFF", timeout=10)
    assert seen - off < 1.0, f"SHUTOFF seen {seen - off:.2f}s after the guest stopped"
    with daemon.client() as api:
        server = api.get(f"/servers/{server_id}").json()["server"]
    assert server["OS-EXT-STS:vm_state"] == "stopped"
    assert server["OS-EXT-STS:power_state"] == 4


def test_shutdown_terminate_deletes_the_server_when_the_guest_powers_off(daemon):
    server_id, password = boot(daemon, shutdown_terminate=True)
    poweroff_inside(daemon, server_id, password)
    wait_api_status(daemon, server_id, "DELETED", timeout=60)
    with daemon.client() as api:
        listed = api.get("/servers/detail", params={"changes-since": "2000-01-01T00:00:00Z"})
    [gone] = [s for s in listed.json()["servers"] if s["id"] == server_id]
    assert gone["status"] == "DELETED"
