"""A fleet for the fleet figures (issue 12): the controller and N agents of
tests/support/fleet.py on this machine's broker and libvirtd, under the run's scratch
folder, with what the figures need around it: an admin token at the controller (for
/os-services), a quota of 20 servers, hosts waited for until `up`, agents' warm
appliances waited for, and on exit the hosts' job queues deleted and the logs kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from agent.config import AmqpConfig
from bench.broker_restart import delete_queue
from bench.report import RESULTS_DIR, progress
from bench.scratch import Scratch
from bench.timing import poll
from tests.support.daemon import Daemon
from tests.support.fleet import Fleet

START_TIMEOUT_S = 120
UP_TIMEOUT_S = 120
WARM_TIMEOUT_S = 300
POLL_S = 0.2


class BenchFleet:
    """`with BenchFleet(scratch, "name", agents=3) as f:` a started fleet whose hosts are up
    (and, with `warm`, whose agents have their warm appliance ready)."""

    def __init__(self, scratch: Scratch, name: str, agents: int, *, warm: int = 0) -> None:
        self.name = name
        self.admin_token = secrets.token_hex(16)
        controller_extra = (
            "[limits]\nmax_total_instances = 20\nmax_total_cores = 40\n"
            f'[[tokens]]\ntoken = "{self.admin_token}"\nproject_id = "bench-admin"\n'
            'user_id = "bench-admin"\nadmin = true\n')
        self.fleet = Fleet(scratch.subdir(name), agents=agents,
                           controller_extra=controller_extra,
                           agent_extra=f"injection_warm_spares = {warm}\n")
        self.warm = warm

    @property
    def controller(self) -> Daemon:
        return self.fleet.controller

    @property
    def hosts(self) -> list[str]:
        return self.fleet.hosts

    def __enter__(self) -> BenchFleet:
        progress(f"{self.name}: a controller and {len(self.hosts)} agent(s)")
        try:
            self.fleet.start(timeout=START_TIMEOUT_S)
            poll(lambda: self.hosts_up(), UP_TIMEOUT_S, interval=0.5, what="every host up")
            if self.warm:
                poll(self._warm_ready, WARM_TIMEOUT_S, interval=0.5, what="warm appliances")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.fleet.stop()
        with contextlib.suppress(Exception):
            asyncio.run(_delete_queues(self.hosts))
        with contextlib.suppress(OSError):  # kept for a look afterwards; no token in them
            RESULTS_DIR.mkdir(exist_ok=True)
            for d in self.fleet.daemons:
                shutil.copyfile(d.log_file, RESULTS_DIR / f"daemon-{self.name}-{d.state_dir.name}.log")

    def _warm_ready(self) -> bool:
        return all('"injection.warm_ready"' in a.log() for a in self.fleet.agents.values())

    # -- the controller's API ------------------------------------------------------------
    def api(self) -> httpx.Client:
        """The controller as the test project (alice)."""
        return self.controller.client()

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.controller.url + "/v2.1", timeout=30,
                            headers={"X-Auth-Token": self.admin_token})

    def services(self) -> list[dict[str, Any]]:
        with self.admin() as c:
            r = c.get("/os-services")
        if r.status_code != 200:
            raise RuntimeError(f"GET /os-services answered {r.status_code}: {r.text[:300]}")
        return [s for s in r.json()["services"] if s["host"] in self.hosts]

    def hosts_up(self, beat_after: float | None = None) -> bool:
        """Every host `up` in /os-services (with `beat_after`, a wall time: and its last
        heartbeat, `updated_at`, no earlier than that)."""
        services = self.services()
        if len(services) < len(self.hosts) or any(s["state"] != "up" for s in services):
            return False
        if beat_after is None:
            return True
        return all(_wall(s["updated_at"]) >= beat_after for s in services)

    def host_of(self, server_id: str) -> str:
        """The agent whose instances folder holds the server."""
        for host, agent in self.fleet.agents.items():
            if (agent.state_dir / "instances" / server_id).exists():
                return host
        raise RuntimeError(f"server {server_id} is on no agent of the fleet")


def _wall(updated_at: str | None) -> float:
    if not updated_at:
        return 0.0
    return datetime.fromisoformat(updated_at).replace(tzinfo=UTC).timestamp()


async def _delete_queues(hosts: list[str]) -> None:
    for host in hosts:
        await delete_queue(AmqpConfig(), host)


def create(api: httpx.Client, name: str, image_id: str) -> dict[str, Any]:
    """POST one server (flavor 1, no network) to the controller; its answer."""
    r = api.post("/servers", json={"server": {"name": name, "imageRef": image_id,
                                              "flavorRef": "1", "networks": "none"}})
    if r.status_code != 202:
        raise RuntimeError(f"POST /servers answered {r.status_code}: {r.text[:300]}")
    return r.json()["server"]


def wait_active(api: httpx.Client, ids: list[str], timeout: float) -> float:
    """Poll the controller's list until every server is ACTIVE (raises on ERROR or after
    `timeout`); the seconds it took."""
    started, wanted = time.monotonic(), set(ids)

    def done() -> bool:
        servers = {s["id"]: s for s in api.get("/servers/detail").json()["servers"]
                   if s["id"] in wanted}
        failed = [s for s in servers.values() if s["status"] == "ERROR"]
        if failed:
            raise RuntimeError(f"server {failed[0]['id']} went to ERROR: "
                               f"{json.dumps(failed[0].get('fault'))[:300]}")
        return len(servers) == len(wanted) and all(s["status"] == "ACTIVE"
                                                   for s in servers.values())

    poll(done, timeout, interval=POLL_S, what="servers ACTIVE at the controller")
    return time.monotonic() - started


def delete_all(api: httpx.Client, ids: list[str], timeout: float = 300) -> None:
    """DELETE at the controller, then wait until each answers 404 there."""
    for i in ids:
        api.delete(f"/servers/{i}")
    poll(lambda: all(api.get(f"/servers/{i}").status_code == 404 for i in ids), timeout,
         interval=0.5, what="servers deleted at the controller")
