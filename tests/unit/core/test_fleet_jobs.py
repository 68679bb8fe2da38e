"""The agent's job intake in fleet mode (issue 12), with the in-memory store and a fake
controller: a job is adopted and run once whatever the broker redelivers; the
controller's failures are retried or dropped as they deserve; a snapshot request
appends one event per server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from agent.core.fleet_jobs import FleetJobIntake
from agent.errors import ControllerUnavailable, ServerNotFound
from agent.model.fleet import JobMessage, JobTicket, SnapshotRequest
from agent.model.job import Job, JobKind, JobStatus
from agent.model.server import Server
from agent.model.states import TaskState, VmState
from tests.unit.core.test_event_feed import add_server
from tests.unit.fakes.store import MemoryStore

HOST = "hv1"


def ticket_for(kind: JobKind = JobKind.CREATE, server: Server | None = None) -> JobTicket:
    now = datetime.now(UTC)
    server = server or Server(id=uuid.uuid4(), project_id="p1", user_id="u", name="vm",
                              image_id=uuid.uuid4(), flavor_id="1", host=HOST, created_at=now,
                              updated_at=now)
    # As the controller holds it once dispatched: ended there, its payload kept for us.
    job = Job(id=uuid.uuid4(), server_id=server.id, kind=kind, status=JobStatus.SUCCEEDED,
              step="dispatched", attempts=1, payload={"admin_pass": "s3cret-pass"},
              created_at=now, updated_at=now)
    return JobTicket(job=job, server=server)


def message(ticket: JobTicket) -> JobMessage:
    return JobMessage(job_id=ticket.job.id, server_id=ticket.server.id, kind=ticket.job.kind,
                      payload_ref=f"/fleet/v1/jobs/{ticket.job.id}", seq=1)


class FakeController:
    def __init__(self) -> None:
        self.tickets: dict[uuid.UUID, JobTicket] = {}
        self.down = False
        self.down_for = 0  # this many fetches fail first
        self.fetched: list[uuid.UUID] = []

    async def fetch(self, job_id: uuid.UUID) -> JobTicket | None:
        self.fetched.append(job_id)
        if self.down or self.down_for > 0:
            self.down_for -= 1
            raise ControllerUnavailable("controller unreachable (test)")
        return self.tickets.get(job_id)


class Clock:
    """Fake time: sleeping moves it on at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def aclose(self) -> None:
        pass


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def parts(clock) -> tuple[MemoryStore, FakeController, list[uuid.UUID], FleetJobIntake]:
    store, controller, kicked = MemoryStore(), FakeController(), []
    return store, controller, kicked, FleetJobIntake(store, controller, kicked.append, HOST,
                                                     patience_s=60, sleep=clock.sleep, clock=clock)


async def test_a_create_job_is_adopted_queued_and_kicked_once_however_often_it_is_delivered(parts):
    store, controller, kicked, intake = parts
    ticket = ticket_for()
    controller.tickets[ticket.job.id] = ticket
    for _ in range(3):
        await intake(message(ticket))
    assert kicked == [ticket.server.id]
    assert controller.fetched == [ticket.job.id]  # a held job is not even fetched again
    job = store.get_job(ticket.job.id)
    assert (job.status, job.step, job.attempts) == (JobStatus.QUEUED, "", 0)
    assert job.payload == {"admin_pass": "s3cret-pass"}
    assert store.get_server(ticket.server.id).vm_state is VmState.BUILDING


async def test_a_controller_away_for_a_while_is_asked_again_with_backoff_holding_the_job(
        parts, clock):
    _store, controller, kicked, intake = parts
    ticket = ticket_for()
    controller.tickets[ticket.job.id] = ticket
    controller.down_for = 4
    await intake(message(ticket))  # returns once adopted: one delivery, no return to the bus
    assert kicked == [ticket.server.id] and len(controller.fetched) == 5
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]


async def test_a_controller_away_past_the_patience_raises_so_the_bus_delivers_the_job_again(
        parts, clock):
    store, controller, kicked, intake = parts
    ticket = ticket_for()
    controller.tickets[ticket.job.id] = ticket
    controller.down = True
    with pytest.raises(ControllerUnavailable):
        await intake(message(ticket))
    assert clock.now <= 60 and sum(clock.slept) > 30  # kept asking within its window
    assert store.get_job(ticket.job.id) is None and kicked == []
    controller.down = False
    await intake(message(ticket))
    assert kicked == [ticket.server.id]


async def test_a_job_the_controller_no_longer_has_is_dropped_and_logged(parts):
    store, _controller, kicked, intake = parts
    ticket = ticket_for()
    with capture_logs() as logs:
        await intake(message(ticket))  # returns: the bus acks it
    assert store.get_job(ticket.job.id) is None and kicked == []
    assert [e["event"] for e in logs] == ["fleet.job_gone"]


async def test_a_ticket_for_another_job_is_not_adopted(parts):
    store, controller, kicked, intake = parts
    ticket, other = ticket_for(), ticket_for()
    controller.tickets[ticket.job.id] = other
    with capture_logs() as logs:
        await intake(message(ticket))
    assert store.get_job(other.job.id) is None and kicked == []
    assert [e["event"] for e in logs] == ["fleet.ticket_mismatch"]


async def test_an_action_takes_the_controllers_task_and_runs_on_the_agents_server(parts):
    store, controller, kicked, intake = parts
    here = await add_server(store)
    await store.update_server(here.id, {"vm_state": VmState.ACTIVE, "task_state": None}, cause="t")
    controller_view = store.get_server(here.id).model_copy(
        update={"task_state": TaskState.POWERING_OFF, "host": HOST})
    ticket = ticket_for(JobKind.STOP, controller_view)
    controller.tickets[ticket.job.id] = ticket
    await intake(message(ticket))
    assert store.get_server(here.id).task_state is TaskState.POWERING_OFF
    assert kicked == [here.id]


async def test_a_job_before_its_servers_create_raises_so_it_comes_again_after_it(parts):
    """A create whose ticket failed goes back to the queue behind jobs already delivered:
    its delete must not be dropped meanwhile."""
    store, controller, kicked, intake = parts
    create = ticket_for()
    delete = ticket_for(JobKind.DELETE, create.server.model_copy(
        update={"task_state": TaskState.DELETING}))
    controller.tickets.update({create.job.id: create, delete.job.id: delete})
    with capture_logs() as logs, pytest.raises(ServerNotFound):
        await intake(message(delete))
    assert store.get_job(delete.job.id) is None and kicked == []
    assert [e["event"] for e in logs] == ["fleet.job_before_its_server"]
    await intake(message(create))
    await intake(message(delete))  # delivered again
    assert store.get_server(create.server.id).task_state is TaskState.DELETING
    assert kicked == [create.server.id, create.server.id]


async def test_no_log_line_carries_the_payload(parts):
    _store, controller, _kicked, intake = parts
    ticket = ticket_for()
    controller.tickets[ticket.job.id] = ticket
    with capture_logs() as logs:
        await intake(message(ticket))
        await intake(message(ticket))
    assert logs and "s3cret-pass" not in repr(logs)


async def test_a_snapshot_request_appends_one_snapshot_event_per_server(parts):
    store, _controller, _kicked, intake = parts
    a, b = await add_server(store), await add_server(store)
    last = store.events_since(0)[-1].seq
    await intake(SnapshotRequest(host=HOST, after_seq=last))
    assert sorted((e.server_id, e.cause) for e in store.events_since(last)) == sorted(
        [(a.id, "snapshot"), (b.id, "snapshot")])


async def test_a_snapshot_request_for_another_host_appends_nothing(parts):
    store, _controller, _kicked, intake = parts
    await add_server(store)
    last = store.events_since(0)[-1].seq
    await intake(SnapshotRequest(host="hv2", after_seq=0))
    assert store.events_since(last) == []
