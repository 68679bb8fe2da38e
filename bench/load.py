"""A bounded API load generator (asyncio + httpx), loopback only: N clients, each its own
connection, send a mix of list (GET /servers/detail), show (GET /servers/{id}), create
and delete for a while, and every request's operation, status and latency is kept.

Creates are bounded so the host's quota and CPUs are respected: at most `max_builds`
servers of the run building at once and `max_live` alive at once (the default quota is
10 instances). A client deletes only servers of the run that are ACTIVE or ERROR, so
every server created is seen settled before it goes; `settle()` waits for builds in
flight and `cleanup()` deletes what is left and waits until every one answers 404.

Each 4xx is judged: *intended* ones are those the mix provokes on purpose or by a race
it expects (403 quota on a create, 404 on a show of a server it deleted, 404/409 on a
delete of a server already going); any other 4xx, every 5xx and every connection error
is unintended. Used by figures 5 and 7 (bench/api_latency.py) and tests/e2e/test_api_load.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.timing import median, percentile

GET_OPS = ("list", "show")
DEFAULT_MIX = {"list": 0.4, "show": 0.45, "create": 0.1, "delete": 0.05}
SETTLE_TIMEOUT_S = 900
GONE_TIMEOUT_S = 600
CONNECTION_ERROR = 0  # the status recorded for a request that got no HTTP answer


@dataclass(frozen=True)
class Sample:
    op: str
    status: int  # CONNECTION_ERROR when no answer came
    latency_s: float
    intended: bool
    phase: str


@dataclass
class Tracked:
    """One server the run created: the last status seen, and whether it went ACTIVE."""

    status: str = "BUILD"
    seen: set[str] = field(default_factory=set)
    deleting: bool = False
    gone: bool = False


@dataclass
class Phase:
    name: str
    duration_s: float
    clients: int
    samples: list[Sample]
    client_cpu_s: float = 0.0  # CPU the generator's own process used meanwhile

    @property
    def client_cpus(self) -> float:
        """How many CPUs the generator kept busy on average (of the host's)."""
        return self.client_cpu_s / self.duration_s

    def of(self, ops: tuple[str, ...]) -> list[Sample]:
        return [s for s in self.samples if s.op in ops]

    def latencies_ms(self, ops: tuple[str, ...] = GET_OPS) -> list[float]:
        return [s.latency_s * 1000 for s in self.of(ops) if s.status]

    def rps(self, ops: tuple[str, ...] | None = None) -> float:
        chosen = self.samples if ops is None else self.of(ops)
        return len(chosen) / self.duration_s

    def statuses(self) -> dict[str, int]:
        """Counts by "op status" (status 0: no HTTP answer)."""
        return dict(sorted(Counter(f"{s.op} {s.status}" for s in self.samples).items()))

    def unintended(self) -> list[Sample]:
        return [s for s in self.samples if not s.intended]

    def summary(self) -> dict[str, object]:
        gets = self.latencies_ms()
        out: dict[str, object] = {"clients": self.clients, "duration_s": round(self.duration_s, 1),
                                  "requests": len(self.samples), "rps": round(self.rps(), 1),
                                  "statuses": self.statuses(),
                                  "unintended": len(self.unintended()),
                                  "client_cpus": round(self.client_cpus, 2)}
        if gets:
            out["get_ms"] = {"n": len(gets), "p50": round(median(gets), 1),
                             "p99": round(percentile(gets, 99), 1), "max": round(max(gets), 1)}
        return out


class LoadGenerator:
    """`await gen.run(...)` any number of phases, then `settle()` and `cleanup()`."""

    def __init__(self, url: str, token: str, image_id: str | None = None, flavor: str = "1",
                 max_builds: int = 4, max_live: int = 6, timeout_s: float = 60,
                 seed: int | None = None) -> None:
        self.base = url.rstrip("/") + "/v2.1"
        self.headers = {"X-Auth-Token": token}
        self.image_id = image_id
        self.flavor = flavor
        self.max_builds = max_builds
        self.max_live = max_live
        self.timeout_s = timeout_s
        self.random = random.Random(seed)  # noqa: S311 - picks requests, not secrets
        self.servers: dict[str, Tracked] = {}
        self.show_pool: list[str] = []  # other ids a show may pick (seeded servers)
        self.phases: list[Phase] = []
        self.cleanup_problems: list[str] = []
        self._creating = 0

    # -- bookkeeping ------------------------------------------------------------------------
    def _alive(self) -> list[str]:
        return [i for i, t in self.servers.items() if not t.gone]

    def _building(self) -> int:
        return self._creating + sum(1 for t in self.servers.values()
                                    if not t.gone and t.status == "BUILD")

    def _saw(self, server: dict[str, object]) -> None:
        tracked = self.servers.get(str(server.get("id")))
        if tracked is not None and not tracked.gone:
            tracked.status = str(server.get("status"))
            tracked.seen.add(tracked.status)

    def _pick_op(self, mix: dict[str, float]) -> str:
        op = self.random.choices(list(mix), weights=list(mix.values()))[0]
        if op == "create" and (self.image_id is None or self._building() >= self.max_builds
                               or len(self._alive()) >= self.max_live):
            op = "show"
        if op == "delete" and not self._deletable():
            op = "show"
        if op == "show" and not (self._alive() or self.show_pool):
            op = "list"
        return op

    def _deletable(self) -> list[str]:
        return [i for i, t in self.servers.items()
                if not t.gone and not t.deleting and t.status in ("ACTIVE", "ERROR")]

    # -- one request ------------------------------------------------------------------------
    async def _request(self, client: httpx.AsyncClient, op: str, track: bool
                       ) -> tuple[int, bool, float]:
        """Send one request of `op`; (status, intended, seconds)."""
        target = ""
        started = time.perf_counter()
        try:
            if op == "list":
                r = await client.get("/servers/detail")
            elif op == "show":
                pool = self._alive() + self.show_pool
                target = self.random.choice(pool)
                r = await client.get(f"/servers/{target}")
            elif op == "create":
                self._creating += 1
                try:
                    r = await client.post("/servers", json={"server": {
                        "name": f"load-{len(self.servers)}", "imageRef": self.image_id,
                        "flavorRef": self.flavor, "networks": "none"}})
                finally:
                    self._creating -= 1
                if r.status_code == 202:
                    self.servers[r.json()["server"]["id"]] = Tracked()
            else:  # delete
                target = self.random.choice(self._deletable())
                self.servers[target].deleting = True
                r = await client.delete(f"/servers/{target}")
            await r.aread()
        except httpx.TransportError:
            return CONNECTION_ERROR, False, time.perf_counter() - started
        elapsed = time.perf_counter() - started
        status = r.status_code
        if track and status == 200:
            body = r.json()
            for server in body.get("servers", [body.get("server") or {}]):
                self._saw(server)
        if status == 404 and target in self.servers and op in ("show", "delete"):
            self.servers[target].gone = self.servers[target].deleting
        return status, self._intended(op, status, target), elapsed

    def _intended(self, op: str, status: int, target: str) -> bool:
        if status < 400:
            return True
        ours = self.servers.get(target)
        if op == "create":
            return status == 403  # over quota: the bound should prevent it, but it is right
        if op == "show":
            return status == 404 and ours is not None and ours.deleting
        if op == "delete":
            return status in (404, 409) and ours is not None
        return False

    # -- phases -------------------------------------------------------------------------------
    async def run(self, name: str, clients: int, duration_s: float,
                  mix: dict[str, float] | None = None, track: bool = True,
                  think_s: float = 0.0) -> Phase:
        """`clients` clients, each on its own connection, for `duration_s` seconds.
        `track` parses answers to follow the run's servers (off for a pure read load).
        `think_s`: each client pauses 0 to 2 x think_s (uniform) after each answer, as a
        polling client does; 0 keeps every client always waiting (saturation)."""
        mix = mix or DEFAULT_MIX
        samples: list[Sample] = []
        deadline = time.monotonic() + duration_s

        async def one_client() -> None:
            async with httpx.AsyncClient(base_url=self.base, headers=self.headers,
                                         timeout=self.timeout_s) as client:
                while time.monotonic() < deadline:
                    op = self._pick_op(mix)
                    status, intended, secs = await self._request(client, op, track)
                    samples.append(Sample(op, status, secs, intended, name))
                    if status == CONNECTION_ERROR:
                        await asyncio.sleep(0.1)  # do not spin on a dead listener
                    elif think_s:
                        await asyncio.sleep(self.random.uniform(0, 2 * think_s))

        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        phase = Phase(name, time.monotonic() - started, clients, samples,
                      client_cpu_s=time.process_time() - cpu)
        self.phases.append(phase)
        return phase

    async def _poll_ours(self, client: httpx.AsyncClient) -> None:
        for server_id, tracked in self.servers.items():
            if tracked.gone:
                continue
            r = await client.get(f"/servers/{server_id}")
            if r.status_code == 404:
                tracked.gone = True
            elif r.status_code == 200:
                self._saw(r.json()["server"])

    async def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until no server of the run is building (bounded)."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers,
                                     timeout=self.timeout_s) as client:
            while True:
                await self._poll_ours(client)
                if not any(t.status == "BUILD" and not t.gone and not t.deleting
                           for t in self.servers.values()):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"servers still building after {timeout_s:.0f} s")
                await asyncio.sleep(1)

    async def cleanup(self, timeout_s: float = GONE_TIMEOUT_S) -> list[str]:
        """Delete every server of the run still alive, wait until each answers 404
        (bounded); the unexpected answers met on the way."""
        problems: list[str] = []
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers,
                                     timeout=self.timeout_s) as client:
            while True:
                await self._poll_ours(client)
                waiting = [i for i, t in self.servers.items() if not t.gone]
                if not waiting:
                    return problems
                for server_id in waiting:
                    tracked = self.servers[server_id]
                    if tracked.deleting:
                        continue
                    r = await client.delete(f"/servers/{server_id}")
                    tracked.deleting = True
                    if r.status_code not in (204, 404):
                        problems.append(f"DELETE {server_id}: {r.status_code} {r.text[:200]}")
                if time.monotonic() > deadline:
                    problems.append(f"{len(waiting)} server(s) not gone after {timeout_s:.0f} s")
                    return problems
                await asyncio.sleep(1)

    def never_active(self) -> list[str]:
        """Servers of the run never seen ACTIVE (a build that failed, or never finished)."""
        return [i for i, t in self.servers.items() if "ACTIVE" not in t.seen]

    def seen_error(self) -> list[str]:
        return [i for i, t in self.servers.items() if "ERROR" in t.seen]


async def build_mix(url: str, token: str, image_id: str, clients: int, duration_s: float,
                    max_builds: int = 4, max_live: int = 6, reference_s: float = 0.0,
                    paced_s: float = 0.0, think_s: float = 0.5) -> LoadGenerator:
    """The load of figure 7 and the e2e test: if asked, first the same clients for
    `reference_s` with reads only (no build, no guest: a server that is still booting
    under TCG would eat the CPU the reference is meant to have); then the mix for
    `duration_s`; then every server of the run deleted. Never raises for a bad answer:
    read them from the phases (reads if asked, the mix, paced if asked)."""
    gen = LoadGenerator(url, token, image_id, max_builds=max_builds, max_live=max_live)
    try:
        if reference_s:
            await gen.run("reads", clients, reference_s, mix={"list": 0.45, "show": 0.55})
        await gen.run("mix", clients, duration_s)
        if paced_s:  # the same mix from clients that pause between requests
            await gen.run("paced", clients, paced_s, think_s=think_s)
        await gen.settle()
    finally:
        gen.cleanup_problems = await gen.cleanup()
    return gen
