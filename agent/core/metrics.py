"""The agent's Prometheus metrics, all under compute_agent_, in a collection of their own.

Every Metrics (one per daemon, a fresh one per unit test) starts empty, so two apps in one
process never collide. The components take a Metrics and default to a fresh one, so a
test that does not look at metrics need not pass one. The metric types and the text
format are agent/core/prometheus_text.py's (not prometheus_client: issue 15, memory).

    metrics = Metrics()
    metrics.watch_servers(store)          # server counts by status, read at scrape time
    body, content_type = metrics.exposition()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from typing import Protocol

import structlog

from agent.core.prometheus_text import (
    CONTENT_TYPE,
    Collector,
    Family,
    Gauge,
    Histogram,
    Sample,
    render,
)
from agent.errors import TakenOver
from agent.model.job import JobKind
from agent.model.states import Status, TaskState, VmState, status_of

log = structlog.get_logger("agent.metrics")

# Creates take 10-60 s under TCG (most of it the guestfs appliance), actions a few seconds.
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 300, 600)
# The monitor's turn-around is milliseconds unless libvirt or the store is slow.
EVENT_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# One appliance launch: ~11 s under TCG, 1-3 s on KVM.
INJECTION_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServerLister(Protocol):
    def server_state_counts(self) -> dict[tuple[VmState, TaskState | None], int]: ...


_SERVERS_HELP = "Servers not deleted, by status"
_WRITES_HELP = "Write transactions committed to the state database (each fsyncs its WAL)"


class ServerStatusCollector:
    """compute_agent_servers{status}: servers not deleted, by API status, counted from the
    store at each scrape (so the figure can never drift from the truth). Every status is
    present, zeros too, so a series does not vanish when its last server leaves it. By
    status only: a project label would grow with the tenants."""

    def __init__(self, store: ServerLister) -> None:
        self.store = store

    def collect(self) -> list[Family]:
        family = Family("compute_agent_servers", _SERVERS_HELP, "gauge")
        try:
            counts: Counter[Status] = Counter()
            for (vm_state, task_state), n in self.store.server_state_counts().items():
                counts[status_of(vm_state, task_state)] += n  # GROUP BY in SQL, not a list
        except Exception as e:  # a store that cannot answer must not take the other metrics down
            log.error("metrics.servers_unreadable", error=type(e).__name__)
            return []
        for status in Status:
            if status is not Status.DELETED:
                family.samples.append(Sample("", (("status", status.value),), counts.get(status, 0)))
        writes = getattr(self.store, "write_transactions", None)
        if writes is None:
            return [family]
        return [family, Family("compute_agent_store_write_transactions", _WRITES_HELP, "counter",
                               [Sample("_total", (), writes)])]


class Metrics:
    def __init__(self) -> None:
        self.jobs_in_progress = Gauge(
            "compute_agent_jobs_in_progress", "Jobs whose workflow is running now (creates are builds)",
            ["kind"])
        self.job_duration = Histogram(
            "compute_agent_job_duration_seconds",
            "Time a job's workflow ran in this daemon, by kind and outcome",
            ["kind", "outcome"], buckets=JOB_BUCKETS)
        self.event_lag = Histogram(
            "compute_agent_event_lag_seconds",
            "From a libvirt lifecycle event's arrival to the monitor's write of the server's change",
            buckets=EVENT_LAG_BUCKETS)
        self.libvirt_connected = Gauge(
            "compute_agent_libvirt_connected", "1 while the libvirt event connection is up, else 0")
        self.injection_duration = Histogram(
            "compute_agent_injection_batch_duration_seconds",
            "Time one libguestfs injection batch took (one appliance launch)",
            buckets=INJECTION_BUCKETS)
        self.injection_batch_size = Histogram(
            "compute_agent_injection_batch_size", "Disks injected per batch",
            buckets=BATCH_SIZE_BUCKETS)
        self.api_request_duration = Histogram(
            "compute_agent_api_request_duration_seconds",
            "API requests by method, route template and status class",
            ["method", "route", "status_class"], buckets=API_BUCKETS)
        self.quarantined = Gauge(
            "compute_agent_quarantined",
            "Domains and instance dirs of ours the store does not know, left alone at start-up",
            ["kind"])
        # A scrape shows them in this order (the one they had before: scrapes stay the same).
        self.collectors: list[Collector] = [
            self.jobs_in_progress, self.job_duration, self.event_lag, self.libvirt_connected,
            self.injection_duration, self.injection_batch_size, self.api_request_duration,
            self.quarantined]
        for kind in JobKind:  # zeros from the start: "no build running" is a fact too
            self.jobs_in_progress.labels(kind.value)

    def watch_servers(self, store: ServerLister) -> None:
        self.collectors.append(ServerStatusCollector(store))

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of everything, and its content type."""
        return render(f for c in self.collectors for f in c.collect()), CONTENT_TYPE

    async def timed_job(self, kind: JobKind, work: Awaitable[None]) -> None:
        """Await a job's workflow, counted as in progress meanwhile and timed by outcome:
        succeeded, failed, interrupted (a later job took over) or paused (agent stopping)."""
        in_progress = self.jobs_in_progress.labels(kind.value)
        in_progress.inc()
        began = time.monotonic()
        outcome = "failed"
        try:
            await work
            outcome = "succeeded"
        except TakenOver:
            outcome = "interrupted"
            raise
        except asyncio.CancelledError:
            outcome = "paused"
            raise
        finally:
            in_progress.dec()
            self.job_duration.labels(kind.value, outcome).observe(time.monotonic() - began)

    @contextlib.contextmanager
    def injection_batch(self, size: int) -> Iterator[None]:
        """Time one batch, whether it succeeds or fails."""
        self.injection_batch_size.observe(size)
        began = time.monotonic()
        try:
            yield
        finally:
            self.injection_duration.observe(time.monotonic() - began)
