"""Figure 13 (issue 12, "broker restart -> every host up again and every queued job done"),
on a whole fleet: a controller and three agents (real daemons) on the machine's broker.

Each agent keeps one warm appliance (as figure 11), so the builds after the restart are
not cold appliance launches. The broker's VM is SIGKILLed (tests/support/broker.py), six
servers are POSTed to the controller while it is down (their create jobs wait in the
controller's store: nothing can be published), and the broker is started again.
Agent: from the kill until every host is `up` in the controller's /os-services with a
heartbeat sent after the kill (`updated_at`) and all six servers are ACTIVE in the
controller's API. Reference: from the kill until the broker itself answers again
(`rabbitmqctl await_startup`), the floor no client can beat. The note adds when the last
of the six jobs reached its agent's store (its log's `fleet.job_adopted`): what is after
that is the builds themselves.

Other helpers' tests on this machine may restart the broker too: if it is not answering
before the kill, or its VM after the run is not the one this figure started, the attempt
is thrown away and made again (at most ATTEMPTS times)."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.context import Context
from bench.fleet_run import BenchFleet, create, delete_all
from bench.report import Figure, progress
from bench.timing import poll
from tests.support.broker import beam_pid, broker_answers, kill_broker, start_broker

JOBS = 6
ATTEMPTS = 3
TIMEOUT_S = 600
QUIET_WAIT_S = 180  # for a broker someone else is restarting


@dataclass
class Restart:
    broker_back_s: float
    hosts_up_s: float
    jobs_done_s: float
    adopted_s: float  # the last of the jobs in its agent's store (fleet.job_adopted)

    @property
    def all_s(self) -> float:
        return max(self.hosts_up_s, self.jobs_done_s)


class _BrokerRestartedElsewhere(Exception):
    pass


def _attempt(fleet: BenchFleet, image_id: str) -> Restart:
    if not broker_answers():
        raise _BrokerRestartedElsewhere("the broker was not answering before the kill")
    poll(lambda: fleet.hosts_up(), TIMEOUT_S, interval=0.5, what="every host up")
    with fleet.api() as api:
        killed_wall, t0 = time.time(), time.monotonic()
        try:
            kill_broker()
        except RuntimeError as e:  # no OS PID: someone else's restart is under way
            raise _BrokerRestartedElsewhere(str(e)) from e
        ids = [create(api, f"bench-broker-{i}", image_id)["id"] for i in range(JOBS)]
        start_broker()
        back = time.monotonic() - t0
        ours = beam_pid()
        hosts_up = jobs_done = None
        deadline = t0 + TIMEOUT_S
        try:
            while hosts_up is None or jobs_done is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"hosts up at {hosts_up}, jobs done at {jobs_done} "
                                       f"after {TIMEOUT_S} s")
                if hosts_up is None and fleet.hosts_up(beat_after=killed_wall):
                    hosts_up = time.monotonic() - t0
                if jobs_done is None:
                    servers = [s for s in api.get("/servers/detail").json()["servers"]
                               if s["id"] in ids]
                    if len(servers) == JOBS and all(s["status"] == "ACTIVE" for s in servers):
                        jobs_done = time.monotonic() - t0
                time.sleep(0.1)
        finally:
            delete_all(api, ids)
    if not broker_answers() or beam_pid() != ours:
        raise _BrokerRestartedElsewhere("the broker was restarted by someone else meanwhile")
    return Restart(broker_back_s=back, hosts_up_s=hosts_up, jobs_done_s=jobs_done,
                   adopted_s=_last_adopted(fleet, set(ids)) - killed_wall)


def _last_adopted(fleet: BenchFleet, server_ids: set[str]) -> float:
    """Wall time at which the last of these servers' create jobs was adopted by its agent
    (from the agents' logs; not their deletes)."""
    times = [datetime.fromisoformat(e["timestamp"]).timestamp()
             for agent in fleet.fleet.agents.values() for e in _log_events(agent.log())
             if e.get("event") == "fleet.job_adopted" and e.get("kind") == "create"
             and e.get("server_id") in server_ids]
    if len(times) != len(server_ids):
        raise RuntimeError(f"{len(times)} of {len(server_ids)} creates adopted in the logs")
    return max(times)


def _log_events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and "timestamp" in entry:
                out.append(entry)
    return out


def fleet_broker(ctx: Context, command: str) -> list[Figure]:
    if not broker_answers():
        start_broker(QUIET_WAIT_S)  # raises if it does not come: nothing to measure
    restart: Restart | None = None
    thrown: list[str] = []
    with BenchFleet(ctx.scratch, "fleetbrk", 3, warm=1) as fleet:
        for attempt in range(1, ATTEMPTS + 1):
            progress(f"figure 13: broker SIGKILL with {JOBS} creates queued at the controller "
                     f"(attempt {attempt})")
            try:
                restart = _attempt(fleet, str(ctx.image.uuid))
                break
            except _BrokerRestartedElsewhere as e:
                thrown.append(str(e))
                progress(f"figure 13: attempt {attempt} thrown away: {e}")
                start_broker(QUIET_WAIT_S)
    if restart is None:
        raise RuntimeError(f"the broker kept being restarted elsewhere: {thrown}")
    progress(f"figure 13: broker back {restart.broker_back_s:.1f} s, hosts up "
             f"{restart.hosts_up_s:.1f} s, jobs done {restart.jobs_done_s:.1f} s")
    return [Figure(
        key="fleet-broker-restart", agent_s=restart.all_s, reference_s=restart.broker_back_s,
        title=f"13. Fleet: broker SIGKILL and restart to every host up at the controller "
              f"(3 agents) and every queued create ACTIVE ({JOBS}) (one run)",
        reference_label="the broker itself answering again (rabbitmqctl await_startup)",
        target_max=None, command=command,
        details={"broker_back_s": round(restart.broker_back_s, 2),
                 "hosts_up_s": round(restart.hosts_up_s, 2),
                 "jobs_done_s": round(restart.jobs_done_s, 2),
                 "last_job_adopted_s": round(restart.adopted_s, 2),
                 "attempts_thrown_away": thrown},
        notes=[f"from the kill: every host `up` in /os-services with a heartbeat sent after "
               f"the kill at {restart.hosts_up_s:.1f} s (heartbeat_s 10), all {JOBS} "
               f"creates (POSTed while the broker was down, so queued in the controller's "
               f"store) ACTIVE at the controller at {restart.jobs_done_s:.1f} s, the last of "
               f"them in its agent's store (adopted) at {restart.adopted_s:.1f} s (the rest "
               f"is the builds themselves: one warm appliance per agent, the 6 guests "
               f"booting); "
               f"attempts thrown away because the broker was restarted elsewhere: "
               f"{len(thrown)}"])]
