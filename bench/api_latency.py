"""Figures 5 and 7: the API under reads and under load.

5. GET /servers/detail with 1,000 servers in the store (one default page: 1,000), one
   client: median and p99 latency; then 20 clients for a while: requests per second.
   Reference: bench/api_floor.py on the same uvicorn, the same SQLite file and the same
   client, measured interleaved with the agent in the same run.
7. 50 clients for 60 s against list/show/create/delete with builds running (bench/load.py):
   p50/p99 GET latency, requests per second, answers by status. Reference: the same
   clients just before, reads only, with no server (so no build and no booting guest).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from bench import api_floor
from bench.api_building import BUILDS, allow_builds_beside_seeded, reads_while_building
from bench.context import REPO, Context
from bench.daemon import BenchDaemon, _free_port, cpu_seconds
from bench.load import LoadGenerator, Phase, build_mix
from bench.report import Figure, progress
from bench.seeded import seeded_daemon, wait_ready
from bench.timing import Stopwatch, median, p99, percentile, poll, summary

SEEDED = 1000
RPS_CLIENTS = 20
PAGE_LIMIT = 10  # the page of figure 5's GET /servers?limit=
LOAD_CLIENTS = 50


@contextlib.contextmanager
def floor_app(ctx: Context, daemon: BenchDaemon) -> Iterator[str]:
    """bench/api_floor.py on a free loopback port, over the daemon's database; its URL."""
    listen = f"127.0.0.1:{_free_port()}"
    log = ctx.scratch.path("api-floor.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "bench.api_floor",
                             str(daemon.state_dir / "agent.db"), listen],
                            cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    url = f"http://{listen}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"api floor exited {proc.returncode}")
        try:
            return httpx.get(url + "/", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll(answers, 30, what="api floor answering")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def wait_start_up_work(daemon: BenchDaemon) -> float:
    """Seconds until the appliance the daemon warms at start is up (or failed): its
    launch is a TCG QEMU taking a CPU for 15-30 s, which the reads would otherwise share
    their 2 CPUs with (the floor has no such start-up work)."""
    with Stopwatch() as sw:
        poll(lambda: any(e in daemon.log.read_text(errors="replace")
                         for e in ("injection.warm_ready", "injection.warm_up_failed")),
             300, interval=0.2, what="the appliance warmed at start")
    return sw.elapsed


def _timed_get(client: httpx.Client, path: str) -> tuple[float, int, int]:
    """Seconds for one GET (body read), its status and body size."""
    with Stopwatch() as sw:
        r = client.get(path)
        size = len(r.content)
    return sw.elapsed, r.status_code, size


def api_reads(ctx: Context, requests: int, rps_seconds: float, command: str) -> list[Figure]:
    progress(f"api: seeding {SEEDED} servers")
    daemon, _ = seeded_daemon(ctx.scratch, "api", SEEDED, ctx.image.uuid)
    allow_builds_beside_seeded(daemon)
    agent_t: list[float] = []
    floor_t: list[float] = []
    with daemon, floor_app(ctx, daemon) as floor_url:
        ready = wait_ready(daemon)
        warm_wait = wait_start_up_work(daemon)
        headers = {"X-Auth-Token": daemon.token}
        with httpx.Client(base_url=daemon.url + "/v2.1", headers=headers, timeout=60) as agent, \
                httpx.Client(base_url=floor_url + "/v2.1", timeout=60) as floor:
            first = agent.get("/servers/detail").json()
            page = len(first["servers"])
            unknown = sum(1 for s in first["servers"] if s["status"] == "UNKNOWN")
            for _ in range(3):  # warm both (imports, caches)
                _timed_get(agent, "/servers/detail")
                _timed_get(floor, "/servers/detail")
            sizes = {}
            for i in range(requests):  # interleaved: drift in load hits both alike
                for name, client, out in (("agent", agent, agent_t), ("floor", floor, floor_t)):
                    secs, status, size = _timed_get(client, "/servers/detail")
                    if status != 200:
                        raise RuntimeError(f"{name} GET /servers/detail answered {status}")
                    out.append(secs * 1000)
                    sizes[name] = size
                if (i + 1) % 25 == 0:
                    progress(f"api: {i + 1}/{requests} GETs, agent median "
                             f"{median(agent_t):.0f} ms, floor {median(floor_t):.0f} ms")
            page_t: dict[str, list[float]] = {"agent": [], "floor": []}
            for _ in range(requests):  # a page of 10 of the 1,000: GET /servers?limit=10
                for name, client in (("agent", agent), ("floor", floor)):
                    secs, status, _ = _timed_get(client, f"/servers?limit={PAGE_LIMIT}")
                    if status != 200:
                        raise RuntimeError(f"{name} GET /servers?limit answered {status}")
                    page_t[name].append(secs * 1000)
            progress(f"api: ?limit={PAGE_LIMIT} p99 agent {p99(page_t['agent']):.1f} ms, "
                     f"floor {p99(page_t['floor']):.1f} ms")
        in_process = [_in_process(daemon) for _ in range(20)]
        rps = {}
        agent_cpu_s = 0.0  # the daemon's own CPU during its phase
        for name, url, token in (("agent", daemon.url, daemon.token), ("floor", floor_url, "")):
            before = cpu_seconds(daemon.pid)
            phase = asyncio.run(_reads_only(url, token, rps_seconds))
            if name == "agent":
                agent_cpu_s = cpu_seconds(daemon.pid) - before
            bad = len(phase.unintended())
            rps[name] = phase
            progress(f"api: {name} {RPS_CLIENTS} clients: {phase.rps():.1f} req/s, "
                     f"{bad} bad answers")
        with httpx.Client(base_url=daemon.url + "/v2.1", headers=headers, timeout=60) as agent, \
                httpx.Client(base_url=floor_url + "/v2.1", timeout=60) as floor:
            busy = reads_while_building(daemon, agent, floor, str(ctx.image.uuid))
        progress(f"api: while {BUILDS} build ({busy.build_s:.0f} s): p99 agent "
                 f"{p99(busy.agent_ms):.1f} ms, floor {p99(busy.floor_ms):.1f} ms")
    floor_label = "bare Starlette + SQL SELECT + json.dumps, same uvicorn and SQLite"
    common = (f"{SEEDED} servers seeded in the store with the agent's SqliteStore (ACTIVE, "
              f"no domain: the start-up reconcile, {ready.get('reconcile_s', '?')} s, marked "
              f"{unknown} of the {page} listed UNKNOWN, 'domain vanished'); default page: "
              f"{page} servers (ServerService.max_page = 1000, no `limit` given); answer "
              f"{sizes['agent'] / 1024:.0f} KiB (agent) vs {sizes['floor'] / 1024:.0f} KiB "
              f"(floor: raw columns, no links or Nova fields); the same work in-process "
              f"without HTTP (floor_body) median {median(in_process):.1f} ms; timed once the "
              f"appliance the daemon warms at start was up ({warm_wait:.0f} s after ready)")
    details = {"agent_ms": summary(agent_t), "floor_ms": summary(floor_t),
               "in_process_floor_ms": summary(in_process), "page": page,
               "bytes": sizes, "rps": {k: v.summary() for k, v in rps.items()},
               "building": {"agent_ms": summary(busy.agent_ms),
                            "floor_ms": summary(busy.floor_ms), "build_s": busy.build_s,
                            "statuses": busy.statuses}}
    return [
        Figure(key="api-detail-median",
               title=f"5. GET /servers/detail, {SEEDED} servers, one client (median of {requests})",
               agent_s=median(agent_t), reference_s=median(floor_t), reference_label=floor_label,
               target_max=8, target_on_agent=True, command=command, unit="ms", notes=[common],
               details=details),
        Figure(key="api-detail-p99",
               title=f"5. GET /servers/detail, {SEEDED} servers, one client (p99 of {requests})",
               agent_s=p99(agent_t), reference_s=p99(floor_t), reference_label=floor_label,
               target_max=15, target_on_agent=True, command=command, unit="ms"),
        Figure(key="api-detail-p99-building",
               title=f"5. GET /servers/detail, {SEEDED} servers, one client, while {BUILDS} "
                     f"servers build (p99 of {len(busy.agent_ms)})",
               agent_s=p99(busy.agent_ms), reference_s=p99(busy.floor_ms),
               reference_label=floor_label + ", interleaved, under the same builds",
               target_max=30, target_on_agent=True, command=command, unit="ms",
               notes=[f"{BUILDS} servers (flavor 1, test image, no network) POSTed at once, "
                      f"the reads from the POSTs until all were ACTIVE "
                      f"({busy.build_s:.0f} s: an appliance launch, the injections and "
                      f"{BUILDS} TCG guests booting on the same 2 CPUs); median agent "
                      f"{median(busy.agent_ms):.1f} ms, floor {median(busy.floor_ms):.1f} ms; "
                      f"final statuses {sorted(set(busy.statuses.values()))}"]),
        Figure(key="api-page-p99",
               title=f"5. GET /servers?limit={PAGE_LIMIT}, {SEEDED} servers, one client "
                     f"(p99 of {requests})",
               agent_s=p99(page_t["agent"]), reference_s=p99(page_t["floor"]),
               reference_label=floor_label + f" (LIMIT {PAGE_LIMIT})", target_max=3,
               target_on_agent=True, command=command, unit="ms",
               notes=[f"median agent {median(page_t['agent']):.1f} ms, floor "
                      f"{median(page_t['floor']):.1f} ms"]),
        Figure(key="api-detail-rps",
               title=f"5. GET /servers/detail, {SEEDED} servers, {RPS_CLIENTS} clients for "
                     f"{rps_seconds:g} s: requests per second (higher is better)",
               agent_s=rps["agent"].rps(), reference_s=rps["floor"].rps(),
               reference_label=floor_label, target_max=300, target_on_agent=True,
               command=command, unit="req/s", higher_is_better=True,
               notes=[f"one asyncio httpx client process on the same 2 CPUs (it kept "
                      f"{rps['agent'].client_cpus:.2f} CPUs busy against the agent, "
                      f"{rps['floor'].client_cpus:.2f} against the floor), each client its own "
                      f"connection; agent answers {rps['agent'].statuses()}, floor "
                      f"{rps['floor'].statuses()}",
                      f"the agent's daemon itself used {agent_cpu_s / rps['agent'].duration_s:.2f} "
                      f"CPUs meanwhile ({1000 * agent_cpu_s / max(len(rps['agent'].samples), 1):.2f} "
                      f"ms of CPU per answer): with the client at a full CPU, the client is the "
                      f"bound of this figure, not the agent"]),
    ]


def _in_process(daemon: BenchDaemon) -> float:
    conn = api_floor.connect(daemon.state_dir / "agent.db")
    try:
        with Stopwatch() as sw:
            api_floor.floor_body(conn)
        return sw.elapsed * 1000
    finally:
        conn.close()


async def _reads_only(url: str, token: str, seconds: float) -> Phase:
    gen = LoadGenerator(url, token)
    return await gen.run("reads", RPS_CLIENTS, seconds, mix={"list": 1.0}, track=False)


PACED_THINK_S = 0.5  # mean pause of a paced client: 50 clients offer about 100 req/s


def api_load(ctx: Context, seconds: float, reference_seconds: float, command: str) -> list[Figure]:
    with BenchDaemon(ctx.scratch, "load") as daemon:
        wait_ready(daemon)
        progress(f"load: {LOAD_CLIENTS} clients reading for {reference_seconds:g} s with no "
                 f"server, then the mix for {seconds:g} s")
        started = time.monotonic()
        gen = asyncio.run(build_mix(daemon.url, daemon.token, str(ctx.image.uuid), LOAD_CLIENTS,
                                    seconds, reference_s=reference_seconds, paced_s=seconds,
                                    think_s=PACED_THINK_S))
        progress(f"load: done in {time.monotonic() - started:.0f} s with clean-up")
    reads, mix, paced = gen.phases[0], gen.phases[1], gen.phases[2]
    got, ref = mix.latencies_ms(), reads.latencies_ms()
    problems = [f"{s.op} {s.status}"
                for s in mix.unintended() + reads.unintended() + paced.unintended()]
    built = len(gen.servers)
    common = (f"mix: list 40 %, show 45 %, create 10 %, delete 5 % of requests (creates bounded: "
              f"≤ 4 building, ≤ 6 alive; flavor 1, no network; deletes only of ACTIVE servers "
              f"of the run); {built} servers created, {len(gen.never_active())} never seen "
              f"ACTIVE, {len(gen.seen_error())} seen ERROR; answers {mix.statuses()}; "
              f"unintended answers: {len(problems)} {sorted(set(problems))[:6]}; clean-up "
              f"problems: {gen.cleanup_problems or 'none'}; latencies are seen by one asyncio "
              f"client process on the same 2 CPUs as the daemon and the TCG builds, which "
              f"itself kept {mix.client_cpus:.2f} CPUs busy ({reads.client_cpus:.2f} in the "
              f"reference); with {LOAD_CLIENTS} clients always waiting for an answer, the mean "
              f"latency is {LOAD_CLIENTS} / rps (Little's law), so p99 < 100 ms needs well over "
              f"{LOAD_CLIENTS / 0.1:.0f} req/s")
    details = {"mix": mix.summary(), "reads": reads.summary(), "paced": paced.summary(),
               "servers_created": built,
               "never_active": gen.never_active(), "cleanup_problems": gen.cleanup_problems}
    return [
        Figure(key="load-get-p99",
               title=f"7. Load: {LOAD_CLIENTS} clients, {seconds:g} s, list/show/create/delete "
                     f"with builds running: p99 GET latency",
               agent_s=percentile_or_zero(got, 99), reference_s=percentile_or_zero(ref, 99),
               reference_label=f"same clients, reads only, before any server or build, "
                               f"{reference_seconds:g} s",
               target_max=100, target_on_agent=True, strict=True, command=command, unit="ms",
               notes=[f"p50 GET {median(got):.1f} ms (reference {median(ref):.1f} ms); "
                      + common], details=details),
        Figure(key="load-paced-get-p99",
               title=f"7. Load: {LOAD_CLIENTS} polling clients (a pause of 0-"
                     f"{2 * PACED_THINK_S:g} s after each answer), {seconds:g} s, the same mix "
                     "with builds running: p99 GET latency",
               agent_s=percentile_or_zero(paced.latencies_ms(), 99),
               reference_s=percentile_or_zero(ref, 99),
               reference_label="the saturating clients, reads only, before any build",
               target_max=100, target_on_agent=True, strict=True, command=command, unit="ms",
               notes=[f"p50 GET {median(paced.latencies_ms()):.1f} ms at "
                      f"{paced.rps():.0f} req/s; answers {paced.statuses()}; clients that wait "
                      "between requests, as pollers do, instead of always having one in flight"],
               details=details),
        Figure(key="load-rps",
               title=f"7. Load: {LOAD_CLIENTS} clients, {seconds:g} s: requests per second "
                     "(higher is better)",
               agent_s=mix.rps(), reference_s=reads.rps(),
               reference_label="same clients, reads only, before any server or build",
               target_max=None,
               command=command, unit="req/s", higher_is_better=True),
    ]


def percentile_or_zero(values: list[float], p: float) -> float:
    return percentile(values, p) if values else 0.0
