"""Run the real daemon (`compute-agent serve`) for tests: own state dir, TCP on loopback
with tokens, the unix socket; start, stop (SIGTERM), kill (SIGKILL), restart."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import IMAGES_DIR, REPO

METADATA_NS = "https://compute-agent.invalid/xmlns/agent/1"
TOKENS = {
    "alice": ("tok-alice-0123456789", "project-alice"),
    "bob": ("tok-bob-0123456789", "project-bob"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, state_dir: Path, extra_config: str = "", env: dict[str, str] | None = None,
                 command: tuple[str, ...] = ("serve",)):
        self.state_dir = state_dir
        self.command = command  # ("controller", "serve") for the fleet's controller
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_file = state_dir.parent / f"{state_dir.name}.toml"
        self.log_file = state_dir.parent / f"{state_dir.name}.log"
        tokens = "\n".join(
            f'[[tokens]]\ntoken = "{tok}"\nproject_id = "{project}"\nuser_id = "{user}"\n'
            for user, (tok, project) in TOKENS.items())
        # Off unless a test asks: a warm appliance is a background QEMU (CPU on this 2-CPU
        # host, and a process the leak checks would have to tell apart). Top-level keys go
        # before extra_config, which may open tables.
        warm = "" if "injection_warm_spares" in extra_config else "injection_warm_spares = 0\n"
        self.config_file.write_text(
            f'state_dir = "{state_dir}"\nimage_dirs = ["{IMAGES_DIR}"]\n{warm}'
            f'api_listen = "127.0.0.1:{self.port}"\nlog_format = "json"\nlog_level = "debug"\n'
            f"{extra_config}\n{tokens}")
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life -------------------------------------------------------------------------
    def start(self, env: dict[str, str] | None = None, timeout: float = 30) -> Daemon:
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(self.config_file), *self.command],
            cwd=REPO, stdout=log, stderr=log, env={**os.environ, **self.env, **(env or {})})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"daemon not answering after {timeout}s: {self.log()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- API ----------------------------------------------------------------------------
    def client(self, user: str = "alice") -> httpx.Client:
        return httpx.Client(base_url=self.url + "/v2.1", timeout=30,
                            headers={"X-Auth-Token": TOKENS[user][0]})

    def wait_status(self, server_id: str, statuses: set[str], timeout: float = 120,
                    user: str = "alice") -> dict[str, Any]:
        """Poll GET until the status is one of `statuses`; returns the server. Bounded."""
        seen = []
        deadline = time.monotonic() + timeout
        with self.client(user) as c:
            while time.monotonic() < deadline:
                r = c.get(f"/servers/{server_id}")
                if r.status_code == 404 and "DELETED" in statuses:
                    return {"id": server_id, "status": "DELETED"}
                server = r.json()["server"]
                seen.append((server["status"], server.get("progress")))
                if server["status"] in statuses:
                    server["_seen"] = seen
                    return server
                time.sleep(0.1)
        raise AssertionError(f"{server_id} not in {statuses} after {timeout}s; seen {seen[-5:]}")


def agent_domains(state_dir: Path) -> dict[str, str]:
    """Domains in libvirt whose disks live under this state dir: uuid -> state."""
    out = subprocess.run(["virsh", "-q", "list", "--all", "--uuid"], capture_output=True,
                         text=True, check=True).stdout.split()
    found = {}
    for uuid in out:
        xml = subprocess.run(["virsh", "dumpxml", uuid], capture_output=True, text=True,
                             check=False).stdout
        if not xml.strip():  # undefined between the listing and now
            continue
        root = ET.fromstring(xml)
        sources = [s.get("file", "") for s in root.iter("source")]
        if any(src.startswith(str(state_dir)) for src in sources):
            state = subprocess.run(["virsh", "domstate", uuid], capture_output=True, text=True,
                                   check=False).stdout.strip()
            found[uuid] = state
    return found


def instance_dirs(state_dir: Path) -> set[str]:
    d = state_dir / "instances"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def destroy_domains(state_dir: Path) -> None:
    """Remove whatever a test left behind in libvirt for this state dir."""
    for uuid in agent_domains(state_dir):
        subprocess.run(["virsh", "destroy", uuid], capture_output=True, check=False)
        subprocess.run(["virsh", "undefine", uuid, "--managed-save"], capture_output=True,
                       check=False)


def query_store(state_dir: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of a daemon's store as committed (read-only; the daemon may be dead)."""
    conn = sqlite3.connect(f"file:{state_dir / 'agent.db'}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def processes_naming(folder: Path) -> list[int]:
    """Pids of the processes whose command line names a file under `folder`."""
    needle = str(folder).encode() + b"/"
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue  # gone meanwhile
        if needle in cmdline:
            found.append(int(proc.name))
    return found
