"""The fleet's broker layer against the real RabbitMQ that `make setup` starts (issue 12).

Each test uses its own host name, hence its own job queue, deleted afterwards. Skipped
with the reason when the broker is not there, except in CI (CI=true), where that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiormq
import pytest
from structlog.testing import capture_logs

from agent.adapters.amqp_bus import DEAD_LETTER_QUEUE, AmqpBus, AmqpSettings, amqp_heartbeat, job_queue
from agent.adapters.sqlite_store import SqliteStore
from agent.config import AmqpConfig
from agent.core.event_feed import EventNotifier
from agent.core.fleet_events import CURSOR, FleetEventRelay
from agent.core.fleet_heartbeats import send_heartbeats
from agent.errors import JobUnroutable
from agent.model.fleet import EventMessage, Heartbeat, JobMessage, SnapshotRequest
from agent.model.job import JobKind
from agent.model.states import VmState
from tests.support.broker import beam_pid, killed_broker, queue_survives_a_crash, ra_names_file, start_broker
from tests.unit.core.test_event_feed import add_server

pytestmark = pytest.mark.integration

SECRET = Path("/etc/compute-agent/amqp.secret")
WAIT_S = 60.0  # generous: the machine is small and shared


def _broker_problem() -> str | None:
    if not SECRET.exists():
        return f"no {SECRET}: the broker was not set up (make setup does it)"
    try:
        ping = subprocess.run(["rabbitmq-diagnostics", "-q", "ping"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "rabbitmq-diagnostics is missing or hangs: RabbitMQ is not installed"
    return None if ping.returncode == 0 else "RabbitMQ is not running (make setup starts it)"


@pytest.fixture(scope="module", autouse=True)
def broker_running() -> None:
    problem = _broker_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: the broker must be running: {problem}")
    pytest.skip(problem)


def settings(host: str | None = None) -> AmqpSettings:
    cfg = AmqpConfig(heartbeat_s=2, reconnect_initial_s=0.2, reconnect_max_s=2.0)
    return AmqpSettings.from_config(cfg, host or f"test-{uuid.uuid4().hex[:10]}")


def job(seq: int = 1) -> JobMessage:
    return JobMessage(job_id=uuid.uuid4(), server_id=uuid.uuid4(), kind=JobKind.CREATE,
                      payload_ref=f"jobs/{seq}", seq=seq)


@pytest.fixture
async def buses() -> AsyncIterator[Callable[..., Awaitable[AmqpBus]]]:
    """Started buses (connected); all closed and their job queues deleted afterwards."""
    made: list[AmqpBus] = []

    async def make(s: AmqpSettings | None = None) -> AmqpBus:
        bus = AmqpBus(s or settings())
        made.append(bus)
        await bus.start()
        await bus.wait_connected(WAIT_S)
        return bus

    yield make
    for bus in made:
        await bus.close()
    async with raw_channel() as channel:
        for bus in made:
            with contextlib.suppress(Exception):
                await channel.queue_delete(job_queue(bus._s.host))


@contextlib.asynccontextmanager
async def raw_channel() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain channel with the agent's credentials: to send what no agent would send."""
    s = settings()
    connection = await aio_pika.connect(host=s.broker_host, port=s.port, login=s.user,
                                        password=s.password, virtualhost=s.vhost)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


class Recorder:
    """A handler that records what it got and can be told to fail or hold."""

    def __init__(self, fail_first: int = 0, hold: asyncio.Event | None = None) -> None:
        self.got: list[JobMessage] = []
        self.fail_first = fail_first
        self.hold = hold
        self.arrived = asyncio.Event()

    async def __call__(self, message: JobMessage) -> None:
        self.got.append(message)
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if len(self.got) <= self.fail_first:
            raise RuntimeError("the store is not writable (test)")

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


async def test_a_published_job_is_handled_once_and_acked_only_after_the_handler_returns(buses):
    agent_settings = settings()
    held = Recorder(hold=asyncio.Event())
    first = await buses(agent_settings)
    await first.consume_jobs(held)
    controller = await buses()
    sent = job()
    await controller.publish_job(agent_settings.host, sent)
    await held.until(lambda: len(held.got) == 1)

    await first.close()  # the agent dies while its handler still holds the job: not acked
    held.hold.set()
    second = Recorder()
    second_bus = await buses(agent_settings)
    await second_bus.consume_jobs(second)
    await second.until(lambda: len(second.got) == 1)
    assert second.got[0].job_id == sent.job_id
    async with asyncio.timeout(WAIT_S):
        while second_bus.settled["acked"] < 1:
            await asyncio.sleep(0.05)
    await second_bus.close()

    # Acked this time: the next consumer gets only the next job, not this one again.
    third = Recorder()
    await (await buses(agent_settings)).consume_jobs(third)
    marker = job(2)
    await controller.publish_job(agent_settings.host, marker)
    await third.until(lambda: any(j.job_id == marker.job_id for j in third.got))
    assert [j.job_id for j in third.got] == [marker.job_id]


async def test_a_job_whose_handler_fails_comes_again_and_the_job_id_keeps_it_from_running_twice(buses):
    agent_settings = settings()
    store: dict[uuid.UUID, JobMessage] = {}
    runs: list[uuid.UUID] = []
    deliveries = Recorder(fail_first=1)

    async def handler(message: JobMessage) -> None:
        await deliveries(message)  # the first delivery fails before the store holds it
        if message.job_id not in store:  # the agent's idempotency: job id already held?
            store[message.job_id] = message
            runs.append(message.job_id)

    await (await buses(agent_settings)).consume_jobs(handler)
    controller = await buses()
    sent = job()
    await controller.publish_job(agent_settings.host, sent)
    await deliveries.until(lambda: len(runs) == 1)
    await controller.publish_job(agent_settings.host, sent)  # a duplicate (lost confirm, resent)
    marker = job(2)
    await controller.publish_job(agent_settings.host, marker)
    await deliveries.until(lambda: marker.job_id in store)
    assert [j.job_id for j in deliveries.got] == [sent.job_id] * 3 + [marker.job_id]
    assert runs == [sent.job_id, marker.job_id]


async def test_invalid_messages_are_dead_lettered_and_logged_without_content_and_the_consumer_goes_on(
        buses):
    agent_settings = settings()
    got = Recorder()
    secret = "hunter2-do-not-log"
    bad = {
        "not-json": b"{" + secret.encode(),
        "unknown-field": job().model_dump_json()[:-1].encode() + f', "password": "{secret}"}}'.encode(),
        "future-version": job().model_dump_json().replace('"v":1', '"v":2').encode(),
        "not-a-job": b'{"v": 1, "hello": "' + secret.encode() + b'"}',
        "a-snapshot-typed-job": job().model_dump_json().encode(),  # decoded by its type: invalid
        "unknown-type": job().model_dump_json().encode(),
        "no-type": job().model_dump_json().encode(),
    }
    types = {"a-snapshot-typed-job": "snapshot", "unknown-type": "launch", "no-type": None}
    with capture_logs() as logs:
        await (await buses(agent_settings)).consume_jobs(got)
        async with raw_channel() as channel:
            for name, body in bad.items():
                await channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=f"{agent_settings.host}-{name}",
                                     type=types.get(name, "job")),
                    job_queue(agent_settings.host))
        good = job()
        await (await buses()).publish_job(agent_settings.host, good)
        await got.until(lambda: len(got.got) == 1)
    assert got.got[0].job_id == good.job_id
    dead_lines = [e for e in logs if e["event"] == "amqp.invalid_message_dead_lettered"]
    assert len(dead_lines) == len(bad)
    assert secret not in repr(logs)

    found: set[str] = set()
    async with raw_channel() as channel:
        dead = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        async with asyncio.timeout(WAIT_S):
            while len(found) < len(bad):
                message = await dead.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.2)
                    continue
                await message.ack()
                if (message.message_id or "").startswith(agent_settings.host + "-"):
                    found.add(message.message_id.removeprefix(agent_settings.host + "-"))
    assert found == set(bad)


async def test_a_snapshot_request_reaches_the_hosts_consumer_in_order_with_its_jobs(buses):
    agent_settings = settings()
    got: list[JobMessage | SnapshotRequest] = []
    arrived = asyncio.Event()

    async def handler(message: JobMessage | SnapshotRequest) -> None:
        got.append(message)
        arrived.set()

    await (await buses(agent_settings)).consume_jobs(handler)
    controller = await buses()
    first, last = job(1), job(2)
    request = SnapshotRequest(host=agent_settings.host, after_seq=41)
    await controller.publish_job(agent_settings.host, first)
    await controller.request_snapshot(request)
    await controller.publish_job(agent_settings.host, last)
    async with asyncio.timeout(WAIT_S):
        while len(got) < 3:
            arrived.clear()
            await arrived.wait()
    assert got == [first, request, last]


async def test_a_snapshot_request_for_a_host_without_a_queue_is_refused(buses):
    controller = await buses()
    with pytest.raises(JobUnroutable):
        await controller.request_snapshot(SnapshotRequest(host=f"nohost-{uuid.uuid4().hex[:8]}",
                                                          after_seq=0))


async def test_a_job_for_a_host_without_a_queue_is_refused_not_lost(buses):
    controller = await buses()
    with pytest.raises(JobUnroutable):
        await controller.publish_job(f"nohost-{uuid.uuid4().hex[:8]}", job())


async def consuming_agent_and_controller(buses):
    """A host's agent consuming its queue into a Recorder, and a controller to publish."""
    agent_settings = settings()
    got = Recorder()
    agent = await buses(agent_settings)
    await agent.consume_jobs(got)
    return agent_settings, agent, got, await buses()


async def test_jobs_published_while_the_broker_is_killed_and_restarted_all_arrive(buses):
    """SIGKILL mid-stream: the publisher pauses and resends what was not confirmed, both
    sides reconnect, and every job (confirmed before, during or after) reaches the agent."""
    names = await asyncio.to_thread(ra_names_file)
    agent_settings, got = settings(), Recorder()
    agent = await buses(agent_settings)
    await agent.consume_jobs(got)
    # The agent created its queue just now: consume_jobs returned only once the broker had
    # it on disk (a queue killed earlier would come back leaderless and empty).
    assert queue_survives_a_crash(agent_settings.vhost, job_queue(agent_settings.host), names)
    controller = await buses()
    sent = [job(i) for i in range(1, 201)]
    confirmed: list[uuid.UUID] = []

    async def publish_all() -> None:
        for j in sent:
            await controller.publish_job(agent_settings.host, j)
            confirmed.append(j.job_id)
            await asyncio.sleep(0.02)

    publishing = asyncio.create_task(publish_all())
    try:
        async with asyncio.timeout(WAIT_S):
            while len(confirmed) < 10:
                await asyncio.sleep(0.05)
        async with killed_broker():
            assert len(confirmed) < len(sent), "the broker died only after every publish (test too slow)"
        async with asyncio.timeout(WAIT_S * 2):
            await publishing
    finally:
        publishing.cancel()
        await asyncio.to_thread(start_broker)  # never leave the broker down for others
    await got.until(lambda: {j.job_id for j in sent} <= {g.job_id for g in got.got})
    assert controller.connects >= 2 and agent.connects >= 2  # both noticed and came back


async def test_a_heartbeat_loop_resumes_after_the_broker_is_killed_and_restarted(buses):
    """The agent's send_heartbeats loop over the bus: after a crash of the broker, fresh
    heartbeats (read after it is back) reach the controller's listener again."""
    host = f"test-{uuid.uuid4().hex[:10]}"
    seen: list[Heartbeat] = []

    async def listen(message: EventMessage | Heartbeat) -> None:
        if isinstance(message, Heartbeat) and message.host == host:
            seen.append(message)

    async def read() -> Heartbeat:
        return Heartbeat(host=host, vcpus=2, ram_mb=24000, disk_total_gb=100, disk_used_gb=7,
                         running_servers=0, virt_type="qemu", images=[], sent_at=datetime.now(UTC),
                         interval_s=1)

    controller = await buses()
    await controller.consume_fleet(listen)
    agent = await buses(settings(host))
    beating = asyncio.create_task(send_heartbeats(agent, read, interval_s=1))
    try:
        async with asyncio.timeout(WAIT_S):
            while not seen:
                await asyncio.sleep(0.1)
        async with killed_broker():
            pass
        back = datetime.now(UTC)
        async with asyncio.timeout(WAIT_S):
            while not any(beat.sent_at >= back for beat in seen):
                await asyncio.sleep(0.1)
    finally:
        beating.cancel()
    assert agent.connects >= 2 and controller.connects >= 2


async def test_a_silent_broker_is_noticed_by_amqp_heartbeats_and_a_publish_waits_for_its_return(buses):
    """SIGSTOP: the TCP connection stays open but nothing answers; only heartbeats tell."""
    agent_settings, agent, got, controller = await consuming_agent_and_controller(buses)
    beam = await asyncio.to_thread(beam_pid)
    sent = job()
    os.kill(beam, signal.SIGSTOP)
    try:
        publishing = asyncio.create_task(controller.publish_job(agent_settings.host, sent))
        async with asyncio.timeout(WAIT_S):
            while controller.connected or agent.connected:
                await asyncio.sleep(0.1)
        assert not publishing.done()  # paused, not dropped, not failed
    finally:
        os.kill(beam, signal.SIGCONT)
    async with asyncio.timeout(WAIT_S * 2):
        await publishing
    await got.until(lambda: any(j.job_id == sent.job_id for j in got.got))
    assert controller.connects >= 2 and agent.connects >= 2


async def test_heartbeats_and_events_reach_the_fleet_listener_in_order(buses):
    host = f"test-{uuid.uuid4().hex[:10]}"
    seen: list[EventMessage | Heartbeat] = []
    arrived = asyncio.Event()

    async def listen(message: EventMessage | Heartbeat) -> None:
        if message.host == host:  # other hosts' leftovers from earlier runs
            seen.append(message)
            arrived.set()

    await (await buses()).consume_fleet(listen)
    agent = await buses(settings(host))
    now = datetime.now(UTC)
    beat = Heartbeat(host=host, vcpus=2, ram_mb=24000, disk_total_gb=100, disk_used_gb=7,
                     running_servers=1, virt_type="qemu", images=["busybox"], sent_at=now,
                     interval_s=2)
    await agent.publish_heartbeat(beat)
    for seq in (1, 2, 3):
        await agent.publish_event(EventMessage(host=host, seq=seq, server_id=uuid.uuid4(),
                                               status="ACTIVE", power_state=1, at=now))
    async with asyncio.timeout(WAIT_S):
        while len(seen) < 4:
            arrived.clear()
            await arrived.wait()
    assert [m for m in seen if isinstance(m, Heartbeat)] == [beat]
    assert [m.seq for m in seen if isinstance(m, EventMessage)] == [1, 2, 3]


async def test_a_real_stores_events_reach_the_fleet_listener_in_seq_order(buses, tmp_path):
    """The agent's outbox (SQLite) -> relay -> broker -> the controller's listener."""
    host = f"test-{uuid.uuid4().hex[:10]}"
    seen: list[EventMessage] = []

    async def listen(message: EventMessage | Heartbeat) -> None:
        if isinstance(message, EventMessage) and message.host == host:
            seen.append(message)

    await (await buses()).consume_fleet(listen)
    store, notifier = SqliteStore(tmp_path / "agent.db"), EventNotifier()
    store.set_event_listener(notifier.poke)
    await store.webhook_cursor(CURSOR)  # from the start: the relay ran before the first event
    relay = asyncio.create_task(FleetEventRelay(store, await buses(settings(host)), notifier, host).run())
    try:
        server = await add_server(store)
        for state in (VmState.ACTIVE, VmState.STOPPED, VmState.ACTIVE):
            await store.update_server(server.id, {"vm_state": state}, cause="test")
        async with asyncio.timeout(WAIT_S):
            while len(seen) < 4:
                await asyncio.sleep(0.05)
    finally:
        relay.cancel()
        store.close()
    assert [(m.seq, m.status) for m in seen] == [(1, "BUILD"), (2, "ACTIVE"), (3, "SHUTOFF"), (4, "ACTIVE")]
    assert {m.server_id for m in seen} == {server.id}


async def test_the_connection_uses_amqp_heartbeats_from_config(buses):
    s = settings()
    await buses(s)
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "-p", s.vhost,
                              "client_properties", "timeout", "--no-table-headers"],
                             capture_output=True, text=True, timeout=60).stdout
    ours = [line for line in listing.splitlines() if f"compute-agent {s.host}" in line]
    assert len(ours) == 1 and ours[0].rstrip().endswith(f"\t{amqp_heartbeat(s.heartbeat_s)}")


async def test_guest_cannot_log_in():
    """Setup deleted guest: even on the default vhost, where guest had every right."""
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=10)
