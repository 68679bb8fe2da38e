"""Figure 4: how soon the agent shows SHUTOFF after a guest powers itself off.

One server of the test image is booted through the daemon and reused: each run logs in
on its serial console, types `poweroff`, and three watchers time the stop:

- libvirt (read-only connection): the bench's own lifecycle events (SHUTDOWN: the guest
  powered off; STOPPED: QEMU gone) and the domain state polled every 5 ms; the earliest
  sign that it is no longer running is when the guest stopped (t0). A poll alone can
  see it late: it may block in libvirt while QEMU is torn down;
- the API, GET /servers/{id} every 20 ms: the first answer that says SHUTOFF;
- the store's events table (read-only SQLite, after the fact): the `at` of the SHUTOFF row.

Then `os-start` and the next run. The reference is a constant, not a measurement: Nova's
default for the same thing (its libvirt driver delays the lifecycle event by 15 s before
`sync_power_state`; the periodic `_sync_power_states` backstop runs every 600 s).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import libvirt

from bench.context import Context
from bench.daemon import BenchDaemon, delete_servers, instance_dir, watch
from bench.report import Figure, progress
from bench.scratch import LIBVIRT_URI
from bench.seeded import wait_ready
from bench.timing import median, summary
from tests.support.console import ConsoleError, SerialConsole

NOVA_EVENT_DELAY_S = 15.0  # nova.virt.libvirt host: lifecycle event delay before sync
NOVA_PERIODIC_S = 600.0  # nova.conf sync_power_state_interval
LIBVIRT_POLL_S = 0.005
API_POLL_S = 0.02
BOOT_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60


@dataclass
class Stop:
    api_s: float
    event_s: float
    in_shutdown_s: float | None  # libvirt "in shutdown" to "shut off", when seen
    api_after_shutoff_s: float  # from libvirt's "shut off" to the API
    by_event: bool  # t0 came from a lifecycle event, not a poll


class _Watch(threading.Thread):
    """Polls `check` until it returns True; then keeps the monotonic and wall times."""

    def __init__(self, check, interval: float, timeout: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.check, self.interval, self.timeout = check, interval, timeout
        self.mono = self.wall = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                if self.check():
                    self.mono, self.wall = time.monotonic(), time.time()
                    return
                time.sleep(self.interval)
            self.error = TimeoutError(f"not seen within {self.timeout:.0f} s")
        except BaseException as e:  # reported by the caller
            self.error = e


class _StateTrail(threading.Thread):
    """Polls a domain's libvirt state until it is shut off; the first monotonic and wall
    times each state was seen (RUNNING -> SHUTDOWN "in shutdown" -> SHUTOFF)."""

    def __init__(self, dom: libvirt.virDomain, interval: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.dom, self.interval, self.timeout = dom, interval, timeout
        self.first: dict[int, tuple[float, float]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                state = self.dom.state()[0]
                self.first.setdefault(state, (time.monotonic(), time.time()))
                if state == libvirt.VIR_DOMAIN_SHUTOFF:
                    return
                time.sleep(self.interval)
            self.error = TimeoutError(f"not shut off within {self.timeout:.0f} s")
        except BaseException as e:  # reported by the caller
            self.error = e

    def stopped(self) -> tuple[float, float]:
        """When the domain was first seen not running."""
        return min(t for state, t in self.first.items() if state != libvirt.VIR_DOMAIN_RUNNING)

    def seconds_in_shutdown(self) -> float | None:
        """From "in shutdown" (the guest finished powering off, QEMU not gone yet) to shut off."""
        if libvirt.VIR_DOMAIN_SHUTDOWN not in self.first:
            return None
        return (self.first[libvirt.VIR_DOMAIN_SHUTOFF][0]
                - self.first[libvirt.VIR_DOMAIN_SHUTDOWN][0])


class _Lifecycle:
    """libvirt lifecycle events of one domain as the bench receives them (its own event
    loop thread, like the agent's): event id -> first monotonic and wall time since the
    last `clear()`. libvirt sends SHUTDOWN when the guest has powered off (QEMU still
    there), STOPPED once the domain is shut off."""

    _loop_started = False

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        self.first: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._id = conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                               self._on_event, None)
        self.conn = conn

    @classmethod
    def start_loop(cls) -> None:
        """Once per process, before the connection is opened."""
        if cls._loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True, name="libvirt-events").start()
        cls._loop_started = True

    def _on_event(self, _conn: object, _dom: object, event: int, _detail: int,
                  _opaque: object) -> None:
        with self._lock:
            self.first.setdefault(event, (time.monotonic(), time.time()))

    def clear(self) -> None:
        with self._lock:
            self.first.clear()

    def stopped(self) -> tuple[float, float] | None:
        with self._lock:
            seen = [t for e, t in self.first.items() if e in (
                libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_STOPPED)]
        return min(seen) if seen else None

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.domainEventDeregisterAny(self._id)


def _event_at(db: Path, server_id: str, after_seq: int) -> tuple[int, float] | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT seq, at FROM events WHERE server_id = ? AND seq > ? AND "
                           "new_status = 'SHUTOFF' ORDER BY seq LIMIT 1",
                           (server_id, after_seq)).fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], datetime.fromisoformat(row[1]).timestamp())


def _last_seq(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    finally:
        conn.close()


def _power_off_once(daemon: BenchDaemon, api: httpx.Client, dom: libvirt.virDomain,
                    events: _Lifecycle, server_id: str, password: str) -> Stop:
    d = instance_dir(daemon, server_id)
    db = daemon.state_dir / "agent.db"
    with SerialConsole(d / "console.sock", d / "console.log") as con:
        con.wait_for(r"CA-GUEST booted", timeout=BOOT_TIMEOUT_S)
        con.login("root", password)
        seq = _last_seq(db)
        stopped = _StateTrail(dom, LIBVIRT_POLL_S, STOP_TIMEOUT_S)
        shown = _Watch(lambda: api.get(f"/servers/{server_id}").json()["server"]["status"]
                       == "SHUTOFF", API_POLL_S, STOP_TIMEOUT_S)
        events.clear()
        stopped.start()
        shown.start()
        with contextlib.suppress(ConsoleError):  # the console may close under us
            con.sendline("poweroff")
        stopped.join(STOP_TIMEOUT_S + 5)
        shown.join(STOP_TIMEOUT_S + 5)
    for w in (stopped, shown):
        if w.error is not None:
            raise RuntimeError(f"power-off watch failed: {w.error}") from w.error
    event = _event_at(db, server_id, seq)
    if event is None:
        raise RuntimeError("no SHUTOFF event row after the power-off")
    # The guest stopped no later than the first sign of it: a lifecycle event, or a poll
    # that returned a state other than running (a poll can block in libvirt while QEMU
    # is being torn down, so it alone may see the stop late).
    t0_mono, t0_wall = min(t for t in (stopped.stopped(), events.stopped()) if t is not None)
    return Stop(api_s=shown.mono - t0_mono, event_s=event[1] - t0_wall,
                in_shutdown_s=stopped.seconds_in_shutdown(),
                by_event=events.stopped() is not None and events.stopped() == (t0_mono, t0_wall),
                api_after_shutoff_s=shown.mono - stopped.first[libvirt.VIR_DOMAIN_SHUTOFF][0])


def _start_again(api: httpx.Client, server_id: str) -> None:
    r = api.post(f"/servers/{server_id}/action", json={"os-start": None})
    if r.status_code != 202:
        raise RuntimeError(f"os-start answered {r.status_code}: {r.text[:300]}")
    watch(api, [server_id], time.monotonic(), BOOT_TIMEOUT_S)


def shutoff(ctx: Context, runs: int, command: str) -> list[Figure]:
    stops: list[Stop] = []
    with BenchDaemon(ctx.scratch, "shutoff") as daemon, daemon.client() as api:
        wait_ready(daemon)
        r = api.post("/servers", json={"server": {"name": "bench-shutoff", "flavorRef": "1",
                                                  "imageRef": str(ctx.image.uuid),
                                                  "networks": "none"}})
        if r.status_code != 202:
            raise RuntimeError(f"POST /servers answered {r.status_code}: {r.text[:300]}")
        server_id, password = r.json()["server"]["id"], r.json()["server"]["adminPass"]
        _Lifecycle.start_loop()
        conn = libvirt.openReadOnly(LIBVIRT_URI)
        events: _Lifecycle | None = None
        try:
            watch(api, [server_id], time.monotonic(), BOOT_TIMEOUT_S)
            dom = conn.lookupByUUIDString(server_id)
            events = _Lifecycle(conn, dom)
            for i in range(runs):
                if i:
                    _start_again(api, server_id)
                stops.append(_power_off_once(daemon, api, dom, events, server_id, password))
                progress(f"shutoff {i + 1}/{runs}: API {stops[-1].api_s:.3f} s, "
                         f"event row {stops[-1].event_s:.3f} s after the guest stopped; "
                         f"'in shutdown' for {stops[-1].in_shutdown_s} s; API "
                         f"{stops[-1].api_after_shutoff_s:.3f} s after 'shut off'; t0 from "
                         f"{'an event' if stops[-1].by_event else 'a poll'}")
        finally:
            if events is not None:
                events.close()
            conn.close()
            delete_servers(api, [server_id])
    api_t = [s.api_s for s in stops]
    event_t = [s.event_s for s in stops]
    reference = (f"Nova's default: {NOVA_EVENT_DELAY_S:g} s lifecycle-event delay before "
                 f"sync_power_state (a constant, not measured)")
    by_event = sum(1 for s in stops if s.by_event)
    how = (f"one server (flavor 1, test image) powered off from inside ({runs} times: "
           f"`poweroff` on its serial console, then os-start); t0 = the earliest of the "
           f"bench's own libvirt lifecycle event (SHUTDOWN or STOPPED; earliest in "
           f"{by_event} of {runs} runs) and a libvirt state other than running, polled every "
           f"{LIBVIRT_POLL_S * 1000:g} ms; the API polled every "
           f"{API_POLL_S * 1000:g} ms (so up to that much is polling); Nova's periodic "
           f"sync_power_state backstop is {NOVA_PERIODIC_S:g} s")
    in_shutdown = [s.in_shutdown_s for s in stops if s.in_shutdown_s is not None]
    after_off = [s.api_after_shutoff_s for s in stops]
    details = {"api_s": summary(api_t), "event_row_s": summary(event_t),
               "in_shutdown_s": summary(in_shutdown) if in_shutdown else None,
               "api_after_shutoff_s": summary(after_off)}
    trail = (f"libvirt showed 'in shutdown' (guest off, QEMU not yet gone) in "
             f"{len(in_shutdown)} of {runs} runs, for a median "
             f"{median(in_shutdown) if in_shutdown else 0:.3f} s before 'shut off'; "
             f"from 'shut off' to SHUTOFF in the API: median {median(after_off):.3f} s, "
             f"max {max(after_off):.3f} s")
    return [
        Figure(key="shutoff-api-median",
               title=f"4. SHUTOFF in the API after a guest poweroff (median of {runs})",
               agent_s=median(api_t), reference_s=NOVA_EVENT_DELAY_S, reference_label=reference,
               target_max=0.5, target_on_agent=True, strict=True, command=command,
               notes=[how, f"max {max(api_t):.3f} s; event row median {median(event_t):.3f} s, "
                           f"max {max(event_t):.3f} s", trail], details=details),
        Figure(key="shutoff-api-max",
               title=f"4. SHUTOFF in the API after a guest poweroff (max of {runs})",
               agent_s=max(api_t), reference_s=NOVA_EVENT_DELAY_S, reference_label=reference,
               target_max=None, command=command),
        Figure(key="shutoff-event-median",
               title=f"4. SHUTOFF event row in the store after a guest poweroff (median of {runs})",
               agent_s=median(event_t), reference_s=NOVA_EVENT_DELAY_S,
               reference_label=reference, target_max=0.5, target_on_agent=True, strict=True,
               command=command),
    ]
