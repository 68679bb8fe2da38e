"""Figure 14 (issue 12, "GET /servers/detail at the controller with 1,000 servers over 3
hosts: median/p99").

1,000 servers are written into the controller's store (`controller.db`) before it starts,
with the agent's own SqliteStore as figure 5 seeds an agent's: ACTIVE, a finished create
job each, placed in turn on the fleet's three hosts (Server.host). The three agents run
(so the hosts are up) but hold none of them: nothing changes them. One client GETs
/servers/detail (the default page: all 1,000), interleaved with the same GET at a single
agent seeded with 1,000 servers as figure 5 (the reference, measured in the same run)."""

from __future__ import annotations

import httpx

from bench.api_latency import SEEDED, _timed_get, wait_start_up_work
from bench.context import Context
from bench.fleet_run import BenchFleet
from bench.report import Figure, progress
from bench.seeded import seed_servers, seeded_daemon, wait_ready
from bench.timing import median, p99, summary
from tests.support.daemon import TOKENS


def fleet_api(ctx: Context, requests: int, command: str) -> list[Figure]:
    progress(f"figure 14: seeding {SEEDED} servers at the controller and at one agent")
    fleet = BenchFleet(ctx.scratch, "fleetapi", 3)
    fleet.controller.state_dir.mkdir(parents=True, exist_ok=True)
    seed_servers(fleet.controller.state_dir / "controller.db", SEEDED, ctx.image.uuid,
                 project=TOKENS["alice"][1], hosts=tuple(fleet.hosts))
    single, _ = seeded_daemon(ctx.scratch, "fleetapi-single", SEEDED, ctx.image.uuid)
    controller_t: list[float] = []
    single_t: list[float] = []
    with fleet, single, fleet.api() as controller, \
            httpx.Client(base_url=single.url + "/v2.1", timeout=60,
                         headers={"X-Auth-Token": single.token}) as agent:
        wait_ready(single)
        wait_start_up_work(single)  # its warm appliance's launch would share the CPUs
        first = controller.get("/servers/detail").json()["servers"]
        page = len(first)
        for _ in range(3):  # warm both
            _timed_get(controller, "/servers/detail")
            _timed_get(agent, "/servers/detail")
        sizes = {}
        for _ in range(requests):  # interleaved: drift in load hits both alike
            for name, client, out in (("controller", controller, controller_t),
                                      ("agent", agent, single_t)):
                secs, status, size = _timed_get(client, "/servers/detail")
                if status != 200:
                    raise RuntimeError(f"{name} GET /servers/detail answered {status}")
                out.append(secs * 1000)
                sizes[name] = size
    progress(f"figure 14: controller median {median(controller_t):.1f} ms, p99 "
             f"{p99(controller_t):.1f} ms; one agent {median(single_t):.1f} / "
             f"{p99(single_t):.1f} ms")
    label = f"one agent with {SEEDED} servers (figure 5's set-up), interleaved"
    details = {"controller_ms": summary(controller_t), "agent_ms": summary(single_t),
               "page": page, "bytes": sizes}
    note = (f"{SEEDED} servers seeded in the controller's store (ACTIVE, placed in turn on "
            f"3 hosts: {page} in the default page); the controller has no libvirt, so they "
            f"stay ACTIVE, while the single agent's start-up reconcile marks its seeded "
            f"servers UNKNOWN (no domains); answers {sizes['controller'] / 1024:.0f} KiB "
            f"(controller) vs {sizes['agent'] / 1024:.0f} KiB (agent); the issue sets no "
            f"target for this figure (figure 5's targets, for one agent, are 8 / 15 ms)")
    return [
        Figure(key="fleet-api-median",
               title=f"14. Fleet: GET /servers/detail at the controller, {SEEDED} servers "
                     f"over 3 hosts (median of {requests})",
               agent_s=median(controller_t), reference_s=median(single_t),
               reference_label=label, target_max=None, command=command, unit="ms",
               notes=[note], details=details),
        Figure(key="fleet-api-p99",
               title=f"14. Fleet: GET /servers/detail at the controller, {SEEDED} servers "
                     f"over 3 hosts (p99 of {requests})",
               agent_s=p99(controller_t), reference_s=p99(single_t), reference_label=label,
               target_max=None, command=command, unit="ms"),
    ]
