"""The agent's Prometheus metrics, all under compute_agent_, in a registry of their own.

The registry is not prometheus_client's global one, so every Metrics (one per daemon, a
fresh one per unit test) starts empty and two apps in one process never collide. The
components take a Metrics and default to a fresh one, so a test that does not look at
metrics need not pass one.

    metrics = Metrics()
    metrics.watch_servers(store)          # server counts by status, read at scrape time
    body, content_type = metrics.exposition()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Iterator
from typing import Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


_WRITES_HELP = "Write transactions committed to the state database (each fsyncs its WAL)"


class ServerStatusCollector(Collector):
    """compute_agent_servers{status}: servers not deleted, by API status, counted from the
    store at each scrape (so the figure can never drift from the truth). Every status is
    present, zeros too, so a series does not vanish when its last server leaves it. By
    status only: a project label would grow with the tenants."""

    def __init__(self, store: ServerLister) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("compute_agent_servers", "Servers not deleted, by status",
                                   labels=["status"])
        try:
            counts: Counter[Status] = Counter()
            for (vm_state, task_state), n in self.store.server_state_counts().items():
                counts[status_of(vm_state, task_state)] += n  # GROUP BY in SQL, not a list
        except Exception as e:  # a store that cannot answer must not take the other metrics down
            log.error("metrics.servers_unreadable", error=type(e).__name__)
            return []
        for status in Status:
            if status is not Status.DELETED:
                family.add_metric([status.value], counts.get(status, 0))
        writes = getattr(self.store, "write_transactions", None)
        if writes is None:
            return [family]
        return [family, CounterMetricFamily(
            "compute_agent_store_write_transactions", _WRITES_HELP, value=writes)]

    def describe(self) -> Iterable[Metric]:
        # Without this, registering would call collect() (and read the store) at once.
        return [GaugeMetricFamily("compute_agent_servers", "Servers not deleted, by status",
                                  labels=["status"]),
                CounterMetricFamily("compute_agent_store_write_transactions", _WRITES_HELP)]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_in_progress = Gauge(
            "compute_agent_jobs_in_progress", "Jobs whose workflow is running now (creates are builds)",
            ["kind"], registry=r)
        self.job_duration = Histogram(
            "compute_agent_job_duration_seconds",
            "Time a job's workflow ran in this daemon, by kind and outcome",
            ["kind", "outcome"], buckets=JOB_BUCKETS, registry=r)
        self.event_lag = Histogram(
            "compute_agent_event_lag_seconds",
            "From a libvirt lifecycle event's arrival to the monitor's write of the server's change",
            buckets=EVENT_LAG_BUCKETS, registry=r)
        self.libvirt_connected = Gauge(
            "compute_agent_libvirt_connected", "1 while the libvirt event connection is up, else 0",
            registry=r)
        self.injection_duration = Histogram(
            "compute_agent_injection_batch_duration_seconds",
            "Time one libguestfs injection batch took (one appliance launch)",
            buckets=INJECTION_BUCKETS, registry=r)
        self.injection_batch_size = Histogram(
            "compute_agent_injection_batch_size", "Disks injected per batch",
            buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.api_request_duration = Histogram(
            "compute_agent_api_request_duration_seconds",
            "API requests by method, route template and status class",
            ["method", "route", "status_class"], buckets=API_BUCKETS, registry=r)
        self.quarantined = Gauge(
            "compute_agent_quarantined",
            "Domains and instance dirs of ours the store does not know, left alone at start-up",
            ["kind"], registry=r)
        for kind in JobKind:  # zeros from the start: "no build running" is a fact too
            self.jobs_in_progress.labels(kind.value)

    def watch_servers(self, store: ServerLister) -> None:
        self.registry.register(ServerStatusCollector(store))

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of everything, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

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
