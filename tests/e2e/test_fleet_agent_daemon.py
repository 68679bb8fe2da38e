"""The real daemon in fleet mode (issue 12): it takes a create job from the real broker,
fetches its ticket from the controller (played by the test: a ticket server and a bus in
a vhost of the test's own), builds a real guest, and its events reach the controller's
listener up to ACTIVE, with the server's state in them. The same job delivered again
makes no second domain; a create it cannot build ends in ERROR with its fault reported.
Its own API refuses writes with a 409 naming the controller; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.adapters.amqp_bus import AmqpBus, AmqpSettings
from agent.errors import JobUnroutable
from agent.model.domain import PowerState
from agent.model.fleet import EventMessage, Heartbeat, JobTicket
from agent.model.job import Job, JobKind
from agent.model.server import Server
from agent.model.states import VmState
from tests.e2e.conftest import IMAGE_ID
from tests.integration.test_amqp_bus import broker_running  # noqa: F401 - skips without a broker
from tests.integration.test_fleet_agent import (  # noqa: F401 - fixtures
    TOKEN,
    amqp_config,
    controller,
    job_message,
    vhost,
)
from tests.support.daemon import TOKENS, Daemon, agent_domains, destroy_domains

pytestmark = pytest.mark.e2e

BUILD_S = 300.0  # a TCG build on a loaded 2-CPU host: generous, bounded


def create_ticket(host: str, image_id: str = IMAGE_ID) -> JobTicket:
    """A create as the controller would hand it out: the server placed on `host`."""
    now = datetime.now(UTC)
    server = Server(id=uuid.uuid4(), project_id=TOKENS["alice"][1], user_id="alice",
                    name="fleet-e2e", image_id=uuid.UUID(image_id), flavor_id="1", host=host,
                    created_at=now, updated_at=now)
    job = Job(id=uuid.uuid4(), server_id=server.id, kind=JobKind.CREATE, created_at=now,
              updated_at=now)
    return JobTicket(job=job, server=server)


def log_events(daemon: Daemon, name: str) -> list[dict]:
    lines = []
    for line in daemon.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            lines.append(entry)
    return lines


async def test_a_fleet_agent_builds_a_job_from_the_broker_once_and_reports_it_active(
        vhost, controller, guest_dir: Path):  # noqa: F811
    host = f"e2e-{uuid.uuid4().hex[:8]}"
    token_file = guest_dir / "fleet.secret"
    token_file.write_text(TOKEN + "\n")
    daemon = Daemon(guest_dir / "state", extra_config=(
        f'[amqp]\nvhost = "{vhost}"\nhost = "{host}"\nheartbeat_s = 2\n'
        f'controller_url = "{controller.url}"\nfleet_token_file = "{token_file}"\n'))
    listener = AmqpBus(AmqpSettings.from_config(amqp_config(vhost), "controller"))
    seen: list[EventMessage | Heartbeat] = []

    async def listen(message: EventMessage | Heartbeat) -> None:
        if message.host == host:
            seen.append(message)

    async def until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.2)

    try:
        await listener.start()
        await listener.consume_fleet(listen)
        await listener.wait_connected(60)
        await asyncio.to_thread(daemon.start)
        ticket = create_ticket(host)
        controller.serve(ticket, host)
        message = job_message(ticket)
        async with asyncio.timeout(60):  # the agent declares its queue once connected
            while True:
                try:
                    await listener.publish_job(host, message)
                    break
                except JobUnroutable:
                    await asyncio.sleep(0.5)

        def active() -> EventMessage | None:
            return next((m for m in seen if isinstance(m, EventMessage)
                         and m.server_id == ticket.server.id and m.status == "ACTIVE"), None)

        await until(lambda: active() is not None or any(
            isinstance(m, EventMessage) and m.status == "ERROR" for m in seen), BUILD_S)
        event = active()
        assert event is not None, [(m.seq, m.status) for m in seen if isinstance(m, EventMessage)]
        assert event.server is not None and event.server.vm_state is VmState.ACTIVE
        assert event.server.power_state is PowerState.RUNNING
        seqs = [m.seq for m in seen if isinstance(m, EventMessage)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        domains = agent_domains(daemon.state_dir)
        assert list(domains) == [str(ticket.server.id)] and domains[str(ticket.server.id)] == "running"

        # The broker delivers the same job again (a resent publish): acked, nothing built.
        await listener.publish_job(host, message)
        await until(lambda: log_events(daemon, "fleet.job_duplicate_acked"))
        assert list(agent_domains(daemon.state_dir)) == [str(ticket.server.id)]
        assert controller.fetched == [str(ticket.job.id)]
        await until(lambda: any(isinstance(m, Heartbeat) and m.running_servers == 1 for m in seen))

        # A job this host cannot build (its image is not here): ERROR, and the fault is in
        # the event the controller gets.
        unbuildable = create_ticket(host, image_id=str(uuid.uuid4()))
        controller.serve(unbuildable, host)
        await listener.publish_job(host, job_message(unbuildable, 2))

        def error() -> EventMessage | None:
            return next((m for m in seen if isinstance(m, EventMessage)
                         and m.server_id == unbuildable.server.id and m.status == "ERROR"), None)

        await until(lambda: error() is not None, BUILD_S)
        fault = error().server.fault
        assert fault is not None and fault.code >= 400 and fault.message
        assert list(agent_domains(daemon.state_dir)) == [str(ticket.server.id)]

        # Its own API: reads answer, a write is refused naming the controller.
        with daemon.client() as api:
            assert api.get(f"/servers/{ticket.server.id}").json()["server"]["status"] == "ACTIVE"
            refused = api.post("/servers", json={"server": {"name": "x", "imageRef": IMAGE_ID,
                                                            "flavorRef": "1"}})
        assert refused.status_code == 409 and controller.url in refused.json()[
            "conflictingRequest"]["message"]
        assert TOKEN not in daemon.log()

        # SIGTERM: the bus, the relay and the heartbeats stop with the daemon, cleanly.
        assert await asyncio.to_thread(daemon.stop) == 0
        assert log_events(daemon, "agent.stopped")
    finally:
        daemon.kill()
        destroy_domains(daemon.state_dir)
        await listener.close()
