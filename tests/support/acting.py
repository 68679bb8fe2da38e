"""Helpers for the server-action e2e tests: a daemon shared by a module, a server under
test that takes actions through the API, and a look at what its guest sees."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import GUEST_SCRATCH
from tests.support.console import SerialConsole
from tests.support.daemon import Daemon, destroy_domains, query_store

IMAGE_ID = "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"  # the busybox-test image


@contextlib.contextmanager
def module_daemon(extra_config: str = "") -> Iterator[Daemon]:
    """A daemon with its own state dir for a whole test module; killed, and every domain
    and file it made removed, afterwards."""
    GUEST_SCRATCH.mkdir(mode=0o755, exist_ok=True)
    root = GUEST_SCRATCH / uuid.uuid4().hex[:12]
    root.mkdir(mode=0o755)
    daemon = Daemon(root / "state", extra_config=extra_config)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.kill()
        destroy_domains(daemon.state_dir)
        shutil.rmtree(root, ignore_errors=True)


def query(daemon: Daemon, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of the daemon's store as committed (read-only)."""
    return query_store(daemon.state_dir, sql, *args)


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", *args], capture_output=True, text=True, check=False).stdout


@dataclass
class ServerUnderTest:
    daemon: Daemon
    id: str
    password: str

    @classmethod
    def create(cls, daemon: Daemon, **extra: Any) -> ServerUnderTest:
        with daemon.client() as api:
            r = api.post("/servers", json={"server": {"name": "act", "imageRef": IMAGE_ID,
                                                      "flavorRef": "1", **extra}})
        assert r.status_code == 202, r.text
        created = r.json()["server"]
        server = cls(daemon, created["id"], created["adminPass"])
        server.wait("ACTIVE", timeout=300)
        return server

    # -- API ----------------------------------------------------------------------------
    def act(self, body: dict[str, Any], status: int = 202) -> httpx.Response:
        with self.daemon.client() as api:
            r = api.post(f"/servers/{self.id}/action", json=body)
        assert r.status_code == status, r.text
        return r

    def show(self) -> dict[str, Any]:
        with self.daemon.client() as api:
            return api.get(f"/servers/{self.id}").json()["server"]

    def wait(self, status: str, timeout: float = 240) -> dict[str, Any]:
        """Wait for `status`; fails at once on ERROR (with the fault) unless asked for."""
        server = self.daemon.wait_status(self.id, {status, "ERROR"}, timeout=timeout)
        assert server["status"] == status, server.get("fault")
        return server

    def statuses_since(self, seq: int) -> list[str]:
        rows = query(self.daemon, "SELECT new_status FROM events WHERE server_id = ? AND seq > ?"
                     " ORDER BY seq", self.id, seq)
        return [r["new_status"] for r in rows]

    def last_seq(self) -> int:
        return query(self.daemon, "SELECT COALESCE(MAX(seq), 0) AS s FROM events")[0]["s"]

    # -- the guest ----------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.daemon.state_dir / "instances" / self.id

    @contextlib.contextmanager
    def shell(self, password: str | None = None, booted: bool = True) -> Iterator[SerialConsole]:
        """A root shell on the serial console (after the boot marker, unless the guest
        goes on from a managed save and so prints none)."""
        with SerialConsole(self.dir / "console.sock", self.dir / "console.log") as con:
            if booted:
                con.wait_for(r"CA-GUEST booted", timeout=180)
            con.login("root", password or self.password)
            yield con

    def uptime(self, con: SerialConsole) -> float:
        rc, out = con.run("cat /proc/uptime")
        assert rc == 0, out
        return float(out.split()[0])


def reboot_resets_uptime(server: ServerUnderTest, kind: str,
                         send: Callable[[], object] | None = None) -> None:
    """The guest's uptime after the reboot (asked for by `send`, else through the API) is
    shorter than the time since it was asked."""
    with server.shell() as con:
        before = server.uptime(con)
    asked = time.monotonic()
    if send is None:
        server.act({"reboot": {"type": kind}})
    else:
        send()
    server.wait("ACTIVE")
    with server.shell() as con:
        after = server.uptime(con)
    assert after < time.monotonic() - asked, (before, after)
