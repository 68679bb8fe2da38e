"""Figures 11 and 12 (issue 12, "Measure"): the fleet's builds and its power-state path.

11. Twelve servers POSTed at once to the controller, to all ACTIVE in the controller's
    API, with three agents, against the same with one agent (the same controller path, so
    only the number of hosts differs). Each agent keeps one warm appliance (waited for
    before the POSTs). All agents share this machine's CPUs, and so do the guests they boot.
12. A guest on a fleet agent powers itself off (`poweroff` on its serial console, as
    figure 4): from the guest's stop (libvirt, as figure 4 sees it) to the first GET
    /servers/{id} at the controller that says SHUTOFF (polled every 20 ms), with the
    agent's own API (the local read) timed beside it. Then os-start at the controller.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter

import libvirt

from bench.context import Context
from bench.fleet_run import BenchFleet, create, delete_all, wait_active
from bench.report import Figure, progress
from bench.scratch import LIBVIRT_URI
from bench.shutoff import (
    API_POLL_S,
    BOOT_TIMEOUT_S,
    LIBVIRT_POLL_S,
    NOVA_EVENT_DELAY_S,
    NOVA_PERIODIC_S,
    STOP_TIMEOUT_S,
    _Lifecycle,
    _StateTrail,
    _Watch,
)
from bench.timing import median, summary
from tests.support.broker import beam_pid
from tests.support.console import ConsoleError, SerialConsole

BUILDS = 12
BUILD_TIMEOUT_S = 900
ATTEMPTS = 3


class _BrokerRestarted(RuntimeError):
    pass


def _builds_again(ctx: Context, name: str, agents: int) -> tuple[float, dict[str, int]]:
    """_builds, made again (at most ATTEMPTS times) when another test restarted the broker."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _builds(ctx, name, agents)
        except _BrokerRestarted as e:
            if attempt == ATTEMPTS:
                raise
            progress(f"{e}: again")
    raise AssertionError("unreachable")


def _builds(ctx: Context, name: str, agents: int) -> tuple[float, dict[str, int]]:
    """Seconds from the first POST of BUILDS servers to all ACTIVE at the controller, and
    how many landed on each host. Raises if another test restarted the broker meanwhile
    (the builds would wait for it: not this figure's number)."""
    with BenchFleet(ctx.scratch, name, agents, warm=1) as fleet, fleet.api() as api:
        broker = beam_pid()
        started = time.monotonic()
        ids = [create(api, f"bench-{name}-{i:02d}", str(ctx.image.uuid))["id"]
               for i in range(BUILDS)]
        try:
            wait_active(api, ids, BUILD_TIMEOUT_S)
            seconds = time.monotonic() - started
            spread = Counter(fleet.host_of(i) for i in ids)
        finally:
            delete_all(api, ids)
    if beam_pid() != broker:
        raise _BrokerRestarted(f"{name}: the broker was restarted (by another test) during "
                               f"the builds")
    progress(f"{name}: {BUILDS} builds on {agents} agent(s) in {seconds:.1f} s, "
             f"spread {sorted(spread.values(), reverse=True)}")
    return seconds, dict(spread)


def fleet_builds(ctx: Context, command: str) -> list[Figure]:
    one_s, one_spread = _builds_again(ctx, "fleet1", 1)
    three_s, three_spread = _builds_again(ctx, "fleet3", 3)
    spread = "/".join(str(n) for n in sorted(three_spread.values(), reverse=True))
    return [Figure(
        key="fleet-builds", agent_s=three_s, reference_s=one_s,
        title=f"11. Fleet: {BUILDS} servers POSTed at once to the controller to all ACTIVE, "
              f"3 agents",
        reference_label=f"the same {BUILDS} on a fleet of 1 agent",
        target_max=0.45, command=command,
        details={"three_agents_s": round(three_s, 2), "one_agent_s": round(one_s, 2),
                 "spread_three": three_spread, "spread_one": one_spread},
        notes=[f"placed {spread} over the 3 hosts; flavor 1, test image, no network, one "
               "warm appliance per agent (ready before the POSTs); the one-agent run goes "
               "through the same controller, so only the number of hosts differs; a run during "
               "which another test restarted the machine's broker is made again",
               "all agents, their appliances and the 12 guests they boot share this machine's "
               "2 CPUs under TCG: the three hosts are three processes here, not three "
               "machines, so the ratio measures the fleet's concurrency (placement, three "
               "job runners and three injection batches at once) with the CPU as the "
               "bound. On separate hosts each agent has its own CPUs and the builds "
               "(4 per host) run beside no other host's, so the ratio would approach "
               "4/12 plus the controller's dispatch"])]


def _power_off_once(fleet: BenchFleet, host: str, dom: libvirt.virDomain, events: _Lifecycle,
                    server_id: str, password: str) -> tuple[float, float]:
    """Seconds from the guest's stop to SHUTOFF at the controller, and at the agent."""
    agent = fleet.fleet.agents[host]
    d = agent.state_dir / "instances" / server_id
    with SerialConsole(d / "console.sock", d / "console.log") as con, \
            fleet.api() as api, agent.client() as local:
        con.wait_for(r"CA-GUEST booted", timeout=BOOT_TIMEOUT_S)
        con.login("root", password)
        stopped = _StateTrail(dom, LIBVIRT_POLL_S, STOP_TIMEOUT_S)
        shown = _Watch(lambda: api.get(f"/servers/{server_id}").json()["server"]["status"]
                       == "SHUTOFF", API_POLL_S, STOP_TIMEOUT_S)
        shown_local = _Watch(lambda: local.get(f"/servers/{server_id}").json()["server"][
            "status"] == "SHUTOFF", API_POLL_S, STOP_TIMEOUT_S)
        events.clear()
        for w in (stopped, shown, shown_local):
            w.start()
        with contextlib.suppress(ConsoleError):  # the console may close under us
            con.sendline("poweroff")
        for w in (stopped, shown, shown_local):
            w.join(STOP_TIMEOUT_S + 5)
    for w in (stopped, shown, shown_local):
        if w.error is not None:
            raise RuntimeError(f"power-off watch failed: {w.error}") from w.error
    t0 = min(t for t in (stopped.stopped(), events.stopped()) if t is not None)[0]
    return shown.mono - t0, shown_local.mono - t0


def fleet_shutoff(ctx: Context, runs: int, command: str) -> list[Figure]:
    at_controller: list[float] = []
    at_agent: list[float] = []
    with BenchFleet(ctx.scratch, "fleetoff", 3) as fleet, fleet.api() as api:
        server = create(api, "bench-fleet-shutoff", str(ctx.image.uuid))
        server_id, password = server["id"], server["adminPass"]
        _Lifecycle.start_loop()
        conn = libvirt.openReadOnly(LIBVIRT_URI)
        events: _Lifecycle | None = None
        try:
            wait_active(api, [server_id], BOOT_TIMEOUT_S)
            host = fleet.host_of(server_id)
            dom = conn.lookupByUUIDString(server_id)
            events = _Lifecycle(conn, dom)
            for i in range(runs):
                if i:
                    r = api.post(f"/servers/{server_id}/action", json={"os-start": None})
                    if r.status_code != 202:
                        raise RuntimeError(f"os-start answered {r.status_code}: {r.text[:300]}")
                    wait_active(api, [server_id], BOOT_TIMEOUT_S)
                c, a = _power_off_once(fleet, host, dom, events, server_id, password)
                at_controller.append(c)
                at_agent.append(a)
                progress(f"fleet shutoff {i + 1}/{runs}: controller {c:.3f} s, agent {a:.3f} s")
        finally:
            if events is not None:
                events.close()
            conn.close()
            delete_all(api, [server_id])
    reference = (f"Nova's default: {NOVA_EVENT_DELAY_S:g} s lifecycle-event delay before "
                 f"sync_power_state (a constant, not measured)")
    relay = [c - a for c, a in zip(at_controller, at_agent, strict=True)]
    details = {"controller_s": summary(at_controller), "agent_s": summary(at_agent),
               "controller_minus_agent_s": summary(relay)}
    how = (f"one server on a fleet of 3 agents, powered off from inside {runs} times "
           f"(`poweroff` on its serial console, then os-start at the controller); t0 as "
           f"figure 4 (libvirt event or state poll, every {LIBVIRT_POLL_S * 1000:g} ms); "
           f"the controller and the agent each polled every {API_POLL_S * 1000:g} ms. "
           f"The agent's own API saw SHUTOFF at a median {median(at_agent):.3f} s (max "
           f"{max(at_agent):.3f} s): the rest is the event's way through the agent's outbox, "
           f"the broker and the controller's commit (median {median(relay):.3f} s). "
           f"Nova's periodic sync_power_state backstop is {NOVA_PERIODIC_S:g} s")
    return [
        Figure(key="fleet-shutoff-median",
               title=f"12. Fleet: SHUTOFF at the controller after a guest poweroff (median of {runs})",
               agent_s=median(at_controller), reference_s=NOVA_EVENT_DELAY_S,
               reference_label=reference, target_max=0.3, target_on_agent=True,
               command=command, notes=[how], details=details),
        Figure(key="fleet-shutoff-max",
               title=f"12. Fleet: SHUTOFF at the controller after a guest poweroff (max of {runs})",
               agent_s=max(at_controller), reference_s=NOVA_EVENT_DELAY_S,
               reference_label=reference, target_max=None, command=command),
    ]
