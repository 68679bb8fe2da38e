"""The agent's fleet mode against the real broker and a real SQLite store (issue 12): the
test plays the controller (publishes jobs on the broker, serves their tickets over HTTP,
listens to the fleet's events and heartbeats) in a vhost of its own, so no other test's
consumer of the shared fleet queues takes its messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.adapters.amqp_bus import AmqpBus, AmqpSettings
from agent.adapters.sqlite_store import SqliteStore
from agent.config import AmqpConfig, Config
from agent.core.event_feed import EventNotifier
from agent.model.fleet import EventMessage, Heartbeat, JobMessage, JobTicket, SnapshotRequest
from agent.model.host import VirtType
from agent.model.states import VmState
from agent.wiring_fleet import FleetLink, fleet_link
from tests.integration.test_amqp_bus import broker_running  # noqa: F401 - skips without a broker
from tests.unit.core.test_fleet_jobs import ticket_for
from tests.unit.fakes.images import FakeImageCatalog, make_image

pytestmark = pytest.mark.integration

WAIT_S = 60.0
TOKEN = "fleet-test-token-7f3a9c"


def _rabbitmqctl(*command: str) -> None:
    """Run it, waiting (bounded) through a broker another test restarts meanwhile."""
    for _ in range(60):
        done = subprocess.run(["rabbitmqctl", "-q", *command], capture_output=True, text=True,
                              timeout=120)
        if done.returncode == 0:
            return
        time.sleep(2)
    pytest.fail(f"rabbitmqctl {command[0]}: {done.stderr or done.stdout}")


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """A vhost of this module's own (the agent's user may use it), deleted afterwards."""
    name = f"fleetagent-test-{uuid.uuid4().hex[:8]}"
    try:
        _rabbitmqctl("add_vhost", name)
        _rabbitmqctl("set_permissions", "-p", name, "compute-agent", ".*", ".*", ".*")
        yield name
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120)


def amqp_config(vhost: str, **kw) -> AmqpConfig:  # type: ignore[no-untyped-def]
    return AmqpConfig(vhost=vhost, heartbeat_s=2, reconnect_initial_s=0.2, reconnect_max_s=2.0, **kw)


@dataclass
class Controller:
    """Plays the controller's ticket route: GET /fleet/v1/jobs/{id}?host=H, X-Fleet-Token."""

    tickets: dict[str, tuple[str, JobTicket]] = field(default_factory=dict)  # job id -> host
    fetched: list[str] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)  # job id -> 503s before its ticket
    url: str = ""

    def serve(self, ticket: JobTicket, host: str) -> None:
        self.tickets[str(ticket.job.id)] = (host, ticket)


@pytest.fixture
def controller() -> Iterator[Controller]:
    state = Controller()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            job_id = parts.path.removeprefix("/fleet/v1/jobs/")
            host = parse_qs(parts.query).get("host", [""])[0]
            state.fetched.append(job_id)
            if self.headers.get("X-Fleet-Token") != TOKEN:
                return self._answer(401, b"{}")
            if state.failing.get(job_id, 0) > 0:
                state.failing[job_id] -= 1
                return self._answer(503, b"{}")
            found = state.tickets.get(job_id)
            if found is None or found[0] != host:
                return self._answer(404, b"{}")
            return self._answer(200, found[1].model_dump_json().encode())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Fleet:
    link: FleetLink
    store: SqliteStore
    kicked: list[uuid.UUID]
    controller_bus: AmqpBus
    seen: list[EventMessage | Heartbeat]
    arrived: asyncio.Event

    async def until(self, predicate) -> None:  # type: ignore[no-untyped-def]
        """Wait (bounded) for a condition on what arrived or what the agent did."""
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), 0.2)


@pytest.fixture
async def fleet(vhost, controller, tmp_path: Path) -> AsyncIterator[Fleet]:
    """An agent's FleetLink as the daemon wires it (fleet_link), over a real SQLite store,
    and a controller's bus listening to the fleet."""
    host = f"hv-{uuid.uuid4().hex[:8]}"
    token_file = tmp_path / "fleet.secret"
    token_file.write_text(TOKEN + "\n")
    state_dir = Path(tempfile.mkdtemp(prefix="fa-"))  # short: console socket paths fit under it
    config = Config(state_dir=state_dir, host=host,
                    amqp=amqp_config(vhost, controller_url=controller.url,
                                     fleet_token_file=token_file))
    store = SqliteStore(tmp_path / "agent.db")
    notifier = EventNotifier()
    store.set_event_listener(notifier.poke)
    kicked: list[uuid.UUID] = []
    (state_dir / "instances").mkdir()
    agent = SimpleNamespace(config=config, store=store, notifier=notifier,
                            images=FakeImageCatalog([make_image("busybox")]),
                            runner=SimpleNamespace(kick=kicked.append,
                                                   deps=SimpleNamespace(virt_type=VirtType.QEMU)))
    link = fleet_link(agent)  # type: ignore[arg-type]
    assert link is not None
    seen: list[EventMessage | Heartbeat] = []
    arrived = asyncio.Event()

    async def listen(message: EventMessage | Heartbeat) -> None:
        if message.host == host:
            seen.append(message)
            arrived.set()

    controller_bus = AmqpBus(AmqpSettings.from_config(amqp_config(vhost), "controller"))
    await controller_bus.start()
    await controller_bus.consume_fleet(listen)
    await link.start()
    await link.bus.wait_connected(WAIT_S)  # type: ignore[attr-defined]
    await controller_bus.wait_connected(WAIT_S)
    yield Fleet(link, store, kicked, controller_bus, seen, arrived)
    await link.close()
    await controller_bus.close()
    notifier.close()
    store.close()
    shutil.rmtree(state_dir)


def job_message(ticket: JobTicket, seq: int = 1) -> JobMessage:
    return JobMessage(job_id=ticket.job.id, server_id=ticket.server.id, kind=ticket.job.kind,
                      payload_ref=f"/fleet/v1/jobs/{ticket.job.id}", seq=seq)


async def test_a_job_from_the_broker_is_adopted_once_and_a_redelivered_duplicate_is_acked(
        fleet, controller):
    host = fleet.link.host
    ticket, marker = ticket_for(), ticket_for()
    controller.serve(ticket, host)
    controller.serve(marker, host)
    await fleet.controller_bus.publish_job(host, job_message(ticket))
    await fleet.controller_bus.publish_job(host, job_message(ticket))  # a resend (lost confirm)
    await fleet.controller_bus.publish_job(host, job_message(marker, 2))
    await fleet.until(lambda: marker.server.id in fleet.kicked)
    assert fleet.kicked == [ticket.server.id, marker.server.id]  # one run each
    assert controller.fetched == [str(ticket.job.id), str(marker.job.id)]  # the duplicate: no fetch
    held = fleet.store.get_server(ticket.server.id)
    assert held is not None and held.vm_state is VmState.BUILDING
    assert fleet.store.get_job(ticket.job.id).payload == ticket.job.payload


async def test_an_unavailable_controller_delays_the_job_and_a_gone_one_drops_it(fleet, controller):
    host = fleet.link.host
    gone, later = ticket_for(), ticket_for()
    controller.serve(later, host)
    controller.failing[str(later.job.id)] = 2  # two 503s: it comes back twice, then is adopted
    await fleet.controller_bus.publish_job(host, job_message(later))
    await fleet.controller_bus.publish_job(host, job_message(gone, 2))  # never served: 404
    await fleet.until(lambda: later.server.id in fleet.kicked and str(gone.job.id) in controller.fetched)
    assert controller.fetched.count(str(later.job.id)) == 3
    assert fleet.kicked == [later.server.id] and fleet.store.get_job(gone.job.id) is None


async def test_events_carry_snapshots_and_a_snapshot_request_resends_every_servers_state(
        fleet, controller):
    host = fleet.link.host
    ticket = ticket_for()
    controller.serve(ticket, host)
    await fleet.controller_bus.publish_job(host, job_message(ticket))
    await fleet.until(lambda: ticket.server.id in fleet.kicked)
    await fleet.store.update_server(ticket.server.id, {"vm_state": VmState.ACTIVE, "task_state": None,
                                                       "power_state": 1}, cause="test")
    events = lambda: [m for m in fleet.seen if isinstance(m, EventMessage)]  # noqa: E731
    await fleet.until(lambda: any(e.status == "ACTIVE" for e in events()))
    assert events()[-1].server is not None and events()[-1].server.vm_state is VmState.ACTIVE

    last = events()[-1].seq
    await fleet.controller_bus.request_snapshot(SnapshotRequest(host=host, after_seq=last))
    await fleet.until(lambda: len(events()) > 0 and events()[-1].seq > last)
    snap = events()[-1]
    assert (snap.seq, snap.server_id, snap.status) == (last + 1, ticket.server.id, "ACTIVE")
    assert [e.seq for e in events()] == list(range(events()[0].seq, last + 2))  # in order


async def test_heartbeats_carry_this_hosts_capacity_and_images(fleet):
    await fleet.until(lambda: any(isinstance(m, Heartbeat) for m in fleet.seen))
    beat = next(m for m in fleet.seen if isinstance(m, Heartbeat))
    assert beat.vcpus >= 1 and beat.ram_mb > 0 and beat.disk_total_gb > 0
    assert beat.virt_type == "qemu" and len(beat.images) == 1 and beat.interval_s == 2
    assert json.loads(beat.model_dump_json())["host"] == fleet.link.host


def test_fleet_mode_without_a_controller_url_or_a_readable_token_refuses_to_start(tmp_path):
    from agent.errors import ConfigError

    short = Path("/tmp/fa-cfg")  # never made: a Config needs only its length to fit
    agent = SimpleNamespace(config=Config(state_dir=short, host="hv1", amqp=AmqpConfig()))
    with pytest.raises(ConfigError, match="controller_url"):
        fleet_link(agent)  # type: ignore[arg-type]
    agent = SimpleNamespace(config=Config(state_dir=short, host="hv1", amqp=AmqpConfig(
        controller_url="http://ctl:8780", fleet_token_file=tmp_path / "missing")))
    with pytest.raises(ConfigError, match="fleet_token_file"):
        fleet_link(agent)  # type: ignore[arg-type]
    assert fleet_link(SimpleNamespace(config=Config(state_dir=short, host="hv1"))) is None  # type: ignore[arg-type]
