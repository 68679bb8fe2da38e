"""Figure 5, under builds: GET /servers/detail of the 1,000 seeded servers, one client,
while 8 servers are built at once (real TCG builds: their appliance launch, injection and
guests booting share the 2 CPUs with the reads), p99. Reference: the floor app's same GET,
interleaved, on the same database and the same loaded CPUs."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from bench.daemon import BenchDaemon, create_server, delete_servers

BUILDS = 8
BUILD_TIMEOUT_S = 600.0
STATUS_EVERY_S = 1.0  # how often the builds' statuses are asked (GET /servers/{id})
# The 1,000 seeded servers and the 8 built, all in the bench token's project.
QUOTA = "[limits]\nmax_total_instances = 2000\nmax_total_cores = 4000\nmax_total_ram = 1024000\n"


@dataclass
class Reads:
    agent_ms: list[float] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    build_s: float = 0.0
    statuses: dict[str, str] = field(default_factory=dict)


def allow_builds_beside_seeded(daemon: BenchDaemon) -> None:
    """Raise the project's quotas (the daemon not started): its 1,000 seeded servers would
    leave no room for a build under the defaults (10 instances)."""
    daemon.config.write_text(daemon.config.read_text() + QUOTA)


def _get_ms(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    r = client.get(path)
    _ = r.content
    if r.status_code != 200:
        raise RuntimeError(f"GET {path} answered {r.status_code}")
    return (time.perf_counter() - started) * 1000


def reads_while_building(daemon: BenchDaemon, agent: httpx.Client, floor: httpx.Client,
                         image_id: str) -> Reads:
    """POST BUILDS servers at once, then GET /servers/detail (agent, then floor) back to
    back until every build is ACTIVE or ERROR; the builds are deleted afterwards."""
    reads = Reads()
    clients = [daemon.client() for _ in range(BUILDS)]
    ids: list[str] = []
    started = time.monotonic()

    def read_both() -> None:
        reads.agent_ms.append(_get_ms(agent, "/servers/detail"))
        reads.floor_ms.append(_get_ms(floor, "/servers/detail"))

    try:
        with ThreadPoolExecutor(BUILDS) as pool:
            posts = [pool.submit(create_server, c, f"bench-busy-{i}", image_id)
                     for i, c in enumerate(clients)]
            while not all(p.done() for p in posts):  # the reads start with the POSTs
                read_both()
            ids = [p.result() for p in posts if p.exception() is None]
            failed = [e for p in posts if (e := p.exception()) is not None]
            if failed:
                raise RuntimeError(f"{len(failed)} of {BUILDS} POSTs failed") from failed[0]
        asked = 0.0
        while len(reads.statuses) < len(ids):
            read_both()
            now = time.monotonic()
            if now - started > BUILD_TIMEOUT_S:
                raise TimeoutError(f"builds not done after {BUILD_TIMEOUT_S:.0f} s")
            if now - asked >= STATUS_EVERY_S:
                asked = now
                for i in ids:
                    status = clients[0].get(f"/servers/{i}").json()["server"]["status"]
                    if status in ("ACTIVE", "ERROR"):
                        reads.statuses[i] = status
        reads.build_s = time.monotonic() - started
    finally:
        if ids:
            delete_servers(clients[0], ids, timeout=BUILD_TIMEOUT_S)
        for c in clients:
            c.close()
    return reads
