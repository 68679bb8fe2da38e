"""The metrics and what feeds them: the job runner counts a workflow in progress and times
it by outcome (a raising or cancelled workflow too), the batcher times each batch, the
monitor records libvirt's connection and the lag from an event to its write, and the
server counts come from the store at scrape time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.core.injection import InjectionBatcher
from agent.core.jobs import JobRunner
from agent.core.metrics import Metrics
from agent.core.monitor import PowerMonitor
from agent.core.networks import NetworkCatalog, PortService
from agent.core.servers import ServerService
from agent.core.workflows.base import Run, StepWorkflow
from agent.errors import TakenOver
from agent.model.domain import PowerState
from agent.model.injection import InjectionRequest
from agent.model.job import Job, JobKind, JobStatus
from agent.model.passwords import PasswordPolicy
from agent.model.requests import CreateServer, Limits
from agent.model.states import Status, TaskState, VmState
from agent.model.workflows import WORKFLOWS
from tests.unit.core.conftest import ALICE, IMAGE_ID, World
from tests.unit.fakes.injector import FakeInjector


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """A sample's value in the scrape, parsed as Prometheus would; None if not exposed."""
    for family in text_string_to_metric_families(metrics.exposition()[0].decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample's value; 0 for a sample not (yet) exposed."""
    return sample(metrics, name, **labels) or 0.0


def in_progress(metrics: Metrics, kind: str = "create") -> float:
    return value(metrics, "compute_agent_jobs_in_progress", kind=kind)


def durations(metrics: Metrics, outcome: str, kind: str = "create") -> float:
    return value(metrics, "compute_agent_job_duration_seconds_count", kind=kind, outcome=outcome)


class ScriptedWorkflow(StepWorkflow):
    """Each step waits for `release`, then does what `then` says (return or raise)."""

    def __init__(self, then: BaseException | None = None) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.then = then

    def steps(self):
        return dict.fromkeys(WORKFLOWS[JobKind.CREATE].steps, self.run)

    async def run(self, run: Run) -> None:
        self.started.set()
        await self.release.wait()
        if self.then is not None:
            raise self.then


async def start_job(world: World, workflow: ScriptedWorkflow) -> tuple[JobRunner, Metrics, Job]:
    """A runner of its own (world's is stopped) working one create job, its workflow started."""
    await world.runner.stop()
    metrics = Metrics()
    runner = JobRunner(world.deps, {JobKind.CREATE: workflow}, metrics=metrics)
    service = ServerService(world.store, world.deps.images, world.deps.flavors,
                            Limits(max_total_instances=3), PasswordPolicy(), kick=runner.kick,
                            ports=PortService(world.store, NetworkCatalog()))
    await service.create(ALICE, CreateServer(name="web-1", image_ref=IMAGE_ID, flavor_ref="1"))
    [job] = world.store.unfinished_jobs()
    await asyncio.wait_for(workflow.started.wait(), 10)
    return runner, metrics, job


async def test_a_running_workflow_is_in_progress_and_timed_as_succeeded(world):
    workflow = ScriptedWorkflow()
    runner, metrics, job = await start_job(world, workflow)
    assert in_progress(metrics) == 1
    workflow.release.set()
    await runner.idle()
    assert in_progress(metrics) == 0
    assert durations(metrics, "succeeded") == 1
    assert durations(metrics, "failed") == 0
    assert world.store.get_job(job.id).status is JobStatus.SUCCEEDED


async def test_a_raising_workflow_leaves_in_progress_at_zero_and_is_timed_as_failed(world):
    workflow = ScriptedWorkflow(then=RuntimeError("boom"))
    runner, metrics, job = await start_job(world, workflow)
    assert in_progress(metrics) == 1
    workflow.release.set()
    await runner.idle()
    assert in_progress(metrics) == 0
    assert durations(metrics, "failed") == 1
    assert durations(metrics, "succeeded") == 0
    assert world.store.get_job(job.id).status is JobStatus.FAILED


async def test_an_interrupted_workflow_is_timed_as_interrupted(world):
    workflow = ScriptedWorkflow(then=TakenOver("a delete took over"))
    runner, metrics, _ = await start_job(world, workflow)
    workflow.release.set()
    await runner.idle()
    assert in_progress(metrics) == 0
    assert durations(metrics, "interrupted") == 1


async def test_a_workflow_stopped_with_the_agent_is_timed_as_paused(world):
    runner, metrics, job = await start_job(world, ScriptedWorkflow())
    await runner.stop()
    assert in_progress(metrics) == 0
    assert durations(metrics, "paused") == 1
    assert world.store.get_job(job.id).status is JobStatus.RUNNING  # resumed on the next start


async def test_a_real_create_times_its_job_and_its_injection_batch(world):
    metrics = Metrics()
    world.runner.metrics = metrics
    world.batcher.metrics = metrics
    await world.create()
    await world.runner.idle()
    assert durations(metrics, "succeeded") == 1
    assert value(metrics, "compute_agent_injection_batch_duration_seconds_count") == 1
    assert value(metrics, "compute_agent_injection_batch_size_sum") == 1


def request(name: str) -> InjectionRequest:
    return InjectionRequest(disk=Path(f"/nonexistent/{name}.qcow2"))


async def test_a_batch_is_timed_once_with_its_size():
    metrics = Metrics()
    batcher = InjectionBatcher(FakeInjector(), window_s=0.01, metrics=metrics)
    await asyncio.gather(batcher.inject(request("a")), batcher.inject(request("b")))
    assert value(metrics, "compute_agent_injection_batch_duration_seconds_count") == 1
    assert value(metrics, "compute_agent_injection_batch_size_count") == 1
    assert value(metrics, "compute_agent_injection_batch_size_sum") == 2


class BrokenInjector:
    def inject(self, requests):
        raise OSError("appliance would not launch")


async def test_a_failed_batch_is_timed_too():
    metrics = Metrics()
    batcher = InjectionBatcher(BrokenInjector(), window_s=0.01, metrics=metrics)
    with pytest.raises(Exception, match="injection failed"):
        await batcher.inject(request("a"))
    assert value(metrics, "compute_agent_injection_batch_duration_seconds_count") == 1


# -- the monitor --------------------------------------------------------------------------

@pytest.fixture
async def active(world):
    server, _ = await world.create()
    await world.runner.idle()
    assert world.store.get_server(server.id).status is Status.ACTIVE
    return server.id


async def test_the_libvirt_connection_gauge_follows_the_event_connection(world):
    metrics = Metrics()
    monitor = PowerMonitor(world.store, world.hypervisor, kick=world.runner.kick, metrics=metrics)
    assert value(metrics, "compute_agent_libvirt_connected") == 0  # nothing connected yet
    await monitor.connection_changed(True)
    assert value(metrics, "compute_agent_libvirt_connected") == 1
    await monitor.connection_changed(False)
    assert value(metrics, "compute_agent_libvirt_connected") == 0


async def test_an_event_answered_by_a_write_observes_the_lag_once(world, active):
    metrics = Metrics()
    monitor = PowerMonitor(world.store, world.hypervisor, kick=world.runner.kick, metrics=metrics)
    world.hypervisor.states[active] = PowerState.SHUTDOWN
    monitor.notify(active, "stopped")
    await monitor.reconcile(active)
    assert world.store.get_server(active).status is Status.SHUTOFF
    assert value(metrics, "compute_agent_event_lag_seconds_count") == 1
    world.hypervisor.states[active] = PowerState.RUNNING
    await monitor.reconcile(active)  # a write with no event behind it: no lag to measure
    assert world.store.get_server(active).status is Status.ACTIVE
    assert value(metrics, "compute_agent_event_lag_seconds_count") == 1


async def test_a_resync_write_is_no_event_lag(world, active):
    metrics = Metrics()
    monitor = PowerMonitor(world.store, world.hypervisor, kick=world.runner.kick, metrics=metrics)
    world.hypervisor.states[active] = PowerState.SHUTDOWN
    monitor.resync()
    await monitor.reconcile(active)
    assert world.store.get_server(active).status is Status.SHUTOFF
    assert value(metrics, "compute_agent_event_lag_seconds_count") == 0


# -- server counts --------------------------------------------------------------------------

async def test_server_counts_are_read_from_the_store_at_each_scrape(world):
    await world.runner.stop()  # the creates stay BUILD
    metrics = Metrics()
    metrics.watch_servers(world.store)
    a, _ = await world.create()
    b, _ = await world.create(name="web-2")
    c, _ = await world.create(name="web-3")
    await world.store.update_server(a.id, {"vm_state": VmState.ACTIVE, "task_state": None}, cause="test")
    await world.store.update_server(b.id, {"vm_state": VmState.ACTIVE, "task_state": TaskState.REBOOTING},
                              cause="test")
    assert value(metrics, "compute_agent_servers", status="ACTIVE") == 1
    assert value(metrics, "compute_agent_servers", status="REBOOT") == 1
    assert value(metrics, "compute_agent_servers", status="BUILD") == 1
    assert sample(metrics, "compute_agent_servers", status="SHUTOFF") == 0
    await world.store.update_server(c.id, {"vm_state": VmState.DELETED, "task_state": None}, cause="test")
    assert value(metrics, "compute_agent_servers", status="BUILD") == 0  # read again: deleted ones leave
    assert sample(metrics, "compute_agent_servers", status="DELETED") is None


class UnreadableStore:
    def list_servers(self):
        raise OSError("database is locked")


def test_an_unreadable_store_leaves_the_other_metrics_served():
    metrics = Metrics()
    metrics.watch_servers(UnreadableStore())
    body, content_type = metrics.exposition()
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "compute_agent_servers" not in names
    assert "compute_agent_jobs_in_progress" in names
    assert content_type.startswith("text/plain")


def test_each_metrics_has_its_own_series():
    one, two = Metrics(), Metrics()
    one.libvirt_connected.set(1)
    assert value(two, "compute_agent_libvirt_connected") == 0
    assert in_progress(two, "delete") == 0
    assert sample(two, "compute_agent_jobs_in_progress", kind="delete") == 0
