"""The real daemon on a state dir under the bench's scratch folder, answering on loopback
TCP with a token made for this run, and the API calls the figures make: create servers,
watch them to ACTIVE, delete them and wait until gone.

The daemon runs as the systemd unit runs it: the `compute-agent` script (not `python -m
agent`) with the unit's `Environment=` settings (MALLOC_ARENA_MAX), on this checkout's
code (PYTHONPATH: the venv's editable install may point at another checkout)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.context import IMAGES_DIR, REPO
from bench.report import RESULTS_DIR
from bench.scratch import Scratch
from bench.timing import poll

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
POLL_S = 0.1
CHECKPOINTS = (40, 60, 80, 100)  # progress values of the create workflow's steps


UNIT_FILE = REPO / "systemd" / "compute-agent.service"


def unit_environment(unit: Path = UNIT_FILE) -> dict[str, str]:
    """The `Environment=` assignments of the systemd unit."""
    env: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            for assignment in shlex.split(line.removeprefix("Environment=")):
                key, _, value = assignment.partition("=")
                env[key] = value
    return env


def daemon_command() -> list[str]:
    """The console script the unit's ExecStart runs (installed beside this interpreter)."""
    return [str(Path(sys.executable).with_name("compute-agent"))]


def daemon_environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **unit_environment(), "PYTHONPATH": path}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class BenchDaemon:
    def __init__(self, scratch: Scratch, name: str) -> None:
        self.name = name
        self.state_dir = scratch.subdir(name)
        self.instances_dir = self.state_dir / "instances"
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.token = secrets.token_hex(16)
        self.config = scratch.path(f"{name}.toml")
        self.log = scratch.path(f"{name}.log")
        self.config.touch(mode=0o600)
        self.config.write_text(
            f"state_dir = {_toml(str(self.state_dir))}\n"
            f"image_dirs = [{_toml(str(IMAGES_DIR))}]\n"
            f"api_listen = {_toml(self.url.removeprefix('http://'))}\n"
            'log_format = "json"\nlog_level = "info"\n'
            f'[[tokens]]\ntoken = {_toml(self.token)}\nproject_id = "bench"\nuser_id = "bench"\n')
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchDaemon:
        with self.log.open("ab") as log:
            # Own session: a Ctrl-C reaches the bench, which then stops the daemon itself.
            self.proc = subprocess.Popen(
                [*daemon_command(), "--config", str(self.config), "serve"],
                cwd=REPO, env=daemon_environment(), stdout=log, stderr=log,
                start_new_session=True)
        try:
            poll(self._answers, START_TIMEOUT_S, what="daemon answering")
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited {self.proc.returncode}; see {self.log}")
        try:
            return httpx.get(self.url + "/", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Kept for a look afterwards (the scratch folder goes); it holds no token.
        with contextlib.suppress(OSError):
            RESULTS_DIR.mkdir(exist_ok=True)
            shutil.copyfile(self.log, RESULTS_DIR / f"daemon-{self.name}.log")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/v2.1", timeout=30,
                            headers={"X-Auth-Token": self.token})


@dataclass
class Watched:
    """What polling saw of one server: seconds from the start until each progress
    checkpoint was first seen reached (a step shorter than a poll shows up together with
    the next one), and until the final status."""

    id: str
    progress_s: dict[int, float] = field(default_factory=dict)
    status: str = ""
    done_s: float = 0.0
    fault: str = ""


def create_server(api: httpx.Client, name: str, image_id: str, flavor: str = "1",
                  personality: list[dict[str, str]] | None = None) -> str:
    body: dict[str, Any] = {"name": name, "imageRef": image_id, "flavorRef": flavor,
                            "networks": "none"}
    if personality:
        body["personality"] = personality
    r = api.post("/servers", json={"server": body})
    if r.status_code != 202:
        raise RuntimeError(f"POST /servers answered {r.status_code}: {r.text[:300]}")
    return r.json()["server"]["id"]


def watch(api: httpx.Client, ids: list[str], started: float, timeout: float) -> dict[str, Watched]:
    """Poll until every server is ACTIVE or ERROR (bounded); raises if any is ERROR."""
    seen = {i: Watched(i) for i in ids}
    deadline = time.monotonic() + timeout
    while True:
        if len(ids) == 1:
            r = api.get(f"/servers/{ids[0]}")
            servers = [r.json()["server"]] if r.status_code == 200 else []
        else:
            servers = api.get("/servers/detail").json()["servers"]
        now = time.monotonic() - started
        for s in servers:
            w = seen.get(s["id"])
            if w is None or w.status:
                continue
            reached = int(s.get("progress") or 0)
            for checkpoint in CHECKPOINTS:  # a poll can miss a short step: count it as passed
                if reached >= checkpoint:
                    w.progress_s.setdefault(checkpoint, now)
            if s["status"] in ("ACTIVE", "ERROR"):
                w.status, w.done_s = s["status"], now
                w.fault = (s.get("fault") or {}).get("message", "")
        if all(w.status for w in seen.values()):
            break
        if time.monotonic() > deadline:
            waiting = [i for i, w in seen.items() if not w.status]
            raise TimeoutError(f"{len(waiting)} server(s) not ACTIVE after {timeout:.0f} s")
        time.sleep(POLL_S)
    errors = [w for w in seen.values() if w.status == "ERROR"]
    if errors:
        raise RuntimeError(f"server {errors[0].id} went to ERROR: {errors[0].fault}")
    return seen


def delete_servers(api: httpx.Client, ids: list[str], timeout: float = 300) -> None:
    """DELETE each server, then wait until every one answers 404 (domain and disk gone)."""
    for i in ids:
        r = api.delete(f"/servers/{i}")
        if r.status_code not in (204, 404):
            raise RuntimeError(f"DELETE /servers/{i} answered {r.status_code}: {r.text[:300]}")

    def gone() -> bool:
        return all(api.get(f"/servers/{i}").status_code == 404 for i in ids)

    poll(gone, timeout, interval=0.5, what="servers deleted")


def instance_dir(daemon: BenchDaemon, server_id: str) -> Path:
    return daemon.instances_dir / server_id
