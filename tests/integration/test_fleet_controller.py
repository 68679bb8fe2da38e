"""The controller against the real RabbitMQ (issue 12), the test playing the agents: each
played agent consumes its queue compute.<host>, fetches each job's ticket over HTTP from
the controller's API (in process, httpx's ASGI transport), and publishes heartbeats and
events with its servers' snapshots back; the test reads the controller's Compute API.

Every test gets a vhost of its own (made and deleted with rabbitmqctl), so nothing of
another test or another helper's run (their hosts, events, heartbeats, the fleet queues'
single active consumer) can reach this controller."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.adapters.amqp_bus import AmqpBus, AmqpSettings
from agent.config import AmqpConfig, Config, TokenConfig
from agent.model.domain import PowerState
from agent.model.fleet import (
    EventMessage,
    Heartbeat,
    JobMessage,
    JobTicket,
    ServerSnapshot,
    SnapshotRequest,
)
from agent.model.network import Network
from agent.model.states import Status, TaskState, VmState
from agent.wiring_controller import Controller, build_controller
from tests.conftest import REPO
from tests.integration.test_amqp_bus import SECRET, broker_running  # noqa: F401 - autouse

pytestmark = pytest.mark.integration

WAIT_S = 120.0  # generous: the machine is small and shared, and other tests restart the broker
FLEET_SECRET = "fleet-test-secret-5f2c"
IMAGE = "busybox-test"
ALICE = {"X-Auth-Token": "tok-alice"}
BOB = {"X-Auth-Token": "tok-bob"}
ADMIN = {"X-Auth-Token": "tok-admin"}
NET = Network(id=uuid.UUID("6c1f3a52-9e0d-4b7a-8f21-3d5e7a9b1c04"), name="fleet-net",
              bridge="brfleettest", cidr="10.251.0.0/24", default=True)


BROKER_BACK_S = 240  # other tests restart the broker (its restart tests): wait for it, bounded


def _rabbitmqctl(*args: str) -> None:
    """Run it once the broker's app is up (waiting, bounded, through another test's restart)."""
    deadline = time.monotonic() + BROKER_BACK_S
    while True:
        subprocess.run(["rabbitmqctl", "-q", "await_startup", "--timeout", "10"],
                       capture_output=True, timeout=120, check=False)
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=120,
                              check=False)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: {done.stderr.decode()[-500:]}")
        time.sleep(1)


@pytest.fixture
def vhost() -> Any:
    name = f"compute-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "compute-agent", ".*", ".*", ".*")
    yield name
    _rabbitmqctl("delete_vhost", name)


def amqp(vhost: str, host: str, token_file: Path | None = None) -> AmqpConfig:
    extra = {"fleet_token_file": token_file} if token_file else {}
    return AmqpConfig(vhost=vhost, host=host, heartbeat_s=2, reconnect_initial_s=0.2,
                      reconnect_max_s=2.0, password_file=SECRET, **extra)


def controller_config(state_dir: Path, vhost: str) -> Config:
    token_file = state_dir.parent / "fleet.secret"
    token_file.write_text(FLEET_SECRET + "\n")
    token_file.chmod(0o600)
    return Config(
        state_dir=state_dir, image_dirs=[REPO / "vm-images" / "build"], networks=[NET],
        tokens=[TokenConfig(token="tok-alice", project_id="p-alice", user_id="alice"),
                TokenConfig(token="tok-bob", project_id="p-bob", user_id="bob"),
                TokenConfig(token="tok-admin", project_id="p-admin", user_id="root", admin=True)],
        amqp=amqp(vhost, "controller", token_file))


@dataclass
class PlayedAgent:
    """What the agent's fleet mode does, as far as the controller can tell."""

    host: str
    bus: AmqpBus
    api: httpx.AsyncClient
    deliveries: list[JobMessage] = field(default_factory=list)
    tickets: dict[uuid.UUID, JobTicket] = field(default_factory=dict)
    seq: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    snapshot_requests: list[SnapshotRequest] = field(default_factory=list)

    async def on_job(self, message: JobMessage | SnapshotRequest) -> None:
        if isinstance(message, SnapshotRequest):
            self.snapshot_requests.append(message)
            self.arrived.set()
            return
        self.deliveries.append(message)
        if message.job_id not in self.tickets:  # the job id: the agent's idempotency key
            r = await self.api.get(f"{message.payload_ref}?host={self.host}",
                                   headers={"X-Fleet-Token": FLEET_SECRET})
            r.raise_for_status()
            self.tickets[message.job_id] = JobTicket.model_validate_json(r.content)
        self.arrived.set()

    async def job(self, kind: str, server_id: str) -> JobTicket:
        async with asyncio.timeout(WAIT_S):
            while True:
                for ticket in self.tickets.values():
                    if ticket.job.kind.value == kind and str(ticket.server.id) == server_id:
                        return ticket
                self.arrived.clear()
                await self.arrived.wait()

    async def heartbeat(self, images: tuple[str, ...] = (IMAGE,)) -> None:
        await self.bus.publish_heartbeat(Heartbeat(
            host=self.host, vcpus=4, ram_mb=8000, disk_total_gb=100, disk_used_gb=1,
            running_servers=0, virt_type="qemu", images=list(images), sent_at=datetime.now(UTC),
            interval_s=10))

    async def event(self, server_id: str, status: Status, **snapshot: Any) -> None:
        self.seq += 1
        now = datetime.now(UTC)
        snap = ServerSnapshot(**{"progress": 0, "updated_at": now, **snapshot})
        await self.bus.publish_event(EventMessage(
            host=self.host, seq=self.seq, server_id=uuid.UUID(server_id), status=status,
            power_state=snap.power_state, at=now, server=snap))


@dataclass
class Fleet:
    controller: Controller
    api: httpx.AsyncClient
    vhost: str
    buses: list[AmqpBus]

    async def agent(self, name: str) -> PlayedAgent:
        bus = AmqpBus(AmqpSettings.from_config(amqp(self.vhost, name), name))
        self.buses.append(bus)
        await bus.start()
        await bus.wait_connected(WAIT_S)
        played = PlayedAgent(name, bus, self.api)
        await bus.consume_jobs(played.on_job)  # declares compute.<host> before any job
        return played

    async def create(self, headers: dict[str, str] = ALICE, **extra: Any) -> str:
        body = {"name": "web", "imageRef": IMAGE_ID, "flavorRef": "1", **extra}
        r = await self.api.post("/v2.1/servers", json={"server": body}, headers=headers)
        assert r.status_code == 202, r.text
        return str(r.json()["server"]["id"])

    async def show(self, server_id: str, headers: dict[str, str] = ALICE) -> dict[str, Any]:
        r = await self.api.get(f"/v2.1/servers/{server_id}", headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json()["server"])

    async def until(self, server_id: str, status: str, headers: dict[str, str] = ALICE,
                    ) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while (server := await self.show(server_id, headers))["status"] != status:
                await asyncio.sleep(0.05)
        return server

    async def until_known(self, host: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while self.controller.store.get_host(host) is None:
                await asyncio.sleep(0.05)


IMAGE_ID = "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"  # busybox-test's manifest


@pytest.fixture
async def fleet(vhost: str) -> AsyncIterator[Fleet]:
    # A short state dir: guests' console sockets under it must fit 107 bytes (the config checks).
    with tempfile.TemporaryDirectory(prefix="ctl-", dir="/tmp") as tmp:
        controller = build_controller(controller_config(Path(tmp) / "state", vhost))
        await controller.bus.start()
        await controller.bus.wait_connected(WAIT_S)
        await controller.bus.consume_fleet(controller.applier)
        dispatching = asyncio.create_task(controller.dispatcher.run())
        transport = httpx.ASGITransport(app=controller.api(None))
        async with httpx.AsyncClient(transport=transport, base_url="http://controller") as api:
            made = Fleet(controller, api, vhost, [])
            try:
                yield made
            finally:
                dispatching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatching
                for bus in [controller.bus, *made.buses]:
                    await bus.close()
                controller.close()


def host_name(tag: str) -> str:
    return f"t{uuid.uuid4().hex[:8]}-{tag}"


def host_names(*tags: str) -> list[str]:
    """Fresh names that sort as the tags do (first-fit placement goes by name)."""
    prefix = uuid.uuid4().hex[:8]
    return [f"t{prefix}-{tag}" for tag in tags]


def host_id(project: str, host: str) -> str:
    return hashlib.sha224((project + host).encode()).hexdigest()


async def test_a_server_is_placed_built_by_its_hosts_agent_and_deleted_through_the_controller(fleet):
    names = host_names("a", "b")  # the first by name lacks the image
    without_image, with_image = await fleet.agent(names[0]), await fleet.agent(names[1])
    await without_image.heartbeat(images=("other-image",))
    await with_image.heartbeat()
    await fleet.until_known(without_image.host)
    await fleet.until_known(with_image.host)

    server_id = await fleet.create(adminPass="Fleet-Pass-123")
    ticket = await with_image.job("create", server_id)
    assert ticket.server.host == with_image.host
    assert ticket.job.payload["admin_pass_hash"].startswith("$6$")  # over HTTP, not the broker
    [delivered] = [m for m in with_image.deliveries if str(m.server_id) == server_id]
    assert "admin_pass_hash" not in delivered.model_dump_json()
    [port] = ticket.ports  # the controller's address for it
    assert port.network_id == NET.id
    assert without_image.deliveries == []

    await with_image.event(server_id, Status.BUILD, vm_state=VmState.BUILDING,
                           task_state=TaskState.SPAWNING, power_state=PowerState.NOSTATE,
                           progress=10)
    await with_image.event(server_id, Status.ACTIVE, vm_state=VmState.ACTIVE, task_state=None,
                           power_state=PowerState.RUNNING, progress=100,
                           launched_at=datetime.now(UTC))
    server = await fleet.until(server_id, "ACTIVE")
    assert server["hostId"] == host_id("p-alice", with_image.host)
    assert server["OS-EXT-STS:power_state"] == int(PowerState.RUNNING)
    assert server["addresses"][NET.name][0]["addr"] == str(port.ip)
    admin_view = await fleet.show(server_id, ADMIN)
    assert admin_view["OS-EXT-SRV-ATTR:host"] == with_image.host

    r = await fleet.api.delete(f"/v2.1/servers/{server_id}", headers=ALICE)
    assert r.status_code == 204
    await with_image.job("delete", server_id)
    await with_image.event(server_id, Status.DELETED, vm_state=VmState.DELETED, task_state=None,
                           power_state=PowerState.NOSTATE, deleted_at=datetime.now(UTC))
    async with asyncio.timeout(WAIT_S):
        while (await fleet.api.get(f"/v2.1/servers/{server_id}", headers=ALICE)).status_code != 404:
            await asyncio.sleep(0.05)
    r = await fleet.api.get("/v2.0/ports", headers=ADMIN)
    assert [p for p in r.json()["ports"] if p["id"] == str(port.id)] == []  # its address free


async def test_no_host_for_a_server_is_nova_no_valid_host_in_error(fleet):
    agent = await fleet.agent(host_name("a"))
    await agent.heartbeat(images=("some-other-image",))
    await fleet.until_known(agent.host)
    server_id = await fleet.create()
    server = await fleet.until(server_id, "ERROR")
    assert server["fault"]["code"] == 500
    assert server["fault"]["message"].startswith("No valid host was found. ")
    assert server["hostId"] == ""
    r = await fleet.api.get(f"/v2.0/ports?device_id={server_id}", headers=ALICE)
    assert r.json()["ports"] == []
    # Deleting it is the controller's own work: no host has it.
    assert (await fleet.api.delete(f"/v2.1/servers/{server_id}", headers=ALICE)).status_code == 204
    async with asyncio.timeout(WAIT_S):
        while (await fleet.api.get(f"/v2.1/servers/{server_id}", headers=ALICE)).status_code != 404:
            await asyncio.sleep(0.05)
    assert agent.deliveries == []


async def test_host_ids_differ_between_hosts_and_projects_and_match_on_one_host(fleet):
    agents = {a.host: a for a in [await fleet.agent(n) for n in host_names("a", "b")]}
    for agent in agents.values():
        await agent.heartbeat()
        await fleet.until_known(agent.host)
    store = fleet.controller.store

    async def create_on(host: str, headers: dict[str, str] = ALICE) -> str:
        """A server placed on `host`: the other host disabled meanwhile (as /os-services)."""
        other = next(h for h in agents if h != host)
        await store.set_host_enabled(other, False, "test")
        server_id = await fleet.create(headers)
        await agents[host].job("create", server_id)  # its agent got it
        await store.set_host_enabled(other, True)
        return server_id

    first, second = sorted(agents)
    a1, a2 = await create_on(first), await create_on(second)
    b1, a3 = await create_on(first, BOB), await create_on(first)
    ids = {s: (await fleet.show(s, BOB if s == b1 else ALICE))["hostId"] for s in (a1, a2, a3, b1)}
    assert ids[a1] == host_id("p-alice", first) == ids[a3]  # one host, one project: the same
    assert ids[a2] == host_id("p-alice", second) != ids[a1]  # two hosts: different
    assert ids[b1] == host_id("p-bob", first) != ids[a1]  # another project: different


async def test_a_redelivered_event_and_a_heartbeat_are_applied_once(fleet):
    agent = await fleet.agent(host_name("a"))
    await agent.heartbeat()
    await fleet.until_known(agent.host)
    server_id = await fleet.create()
    await agent.job("create", server_id)
    await agent.event(server_id, Status.ACTIVE, vm_state=VmState.ACTIVE, task_state=None,
                      power_state=PowerState.RUNNING, progress=100)
    await fleet.until(server_id, "ACTIVE")
    await agent.event(server_id, Status.SHUTOFF, vm_state=VmState.STOPPED, task_state=None,
                      power_state=PowerState.SHUTDOWN, progress=100)
    await fleet.until(server_id, "SHUTOFF")
    agent.seq = 1  # the agent resends its first event (a lost confirm): ACTIVE again
    await agent.event(server_id, Status.ACTIVE, vm_state=VmState.ACTIVE, task_state=None,
                      power_state=PowerState.RUNNING, progress=100)
    agent.seq = 2  # then its next one, for a server of its own: applied after the duplicate
    marker = await fleet.create()
    await agent.job("create", marker)
    await agent.event(marker, Status.ERROR, vm_state=VmState.ERROR, task_state=None,
                      power_state=PowerState.NOSTATE)
    await fleet.until(marker, "ERROR")
    assert (await fleet.show(server_id))["status"] == "SHUTOFF"
    assert fleet.controller.store.get_host(agent.host).last_event_seq == 3


async def test_a_gap_in_a_hosts_events_asks_that_host_for_a_snapshot_over_the_broker(fleet):
    agent = await fleet.agent(host_name("a"))
    await agent.heartbeat()
    await fleet.until_known(agent.host)
    server_id = await fleet.create()
    await agent.job("create", server_id)
    agent.seq = 4  # events 1..4 lost: the controller has applied none of them
    await agent.event(server_id, Status.ACTIVE, vm_state=VmState.ACTIVE, task_state=None,
                      power_state=PowerState.RUNNING, progress=100)
    await fleet.until(server_id, "ACTIVE")  # applied all the same: a snapshot is whole
    async with asyncio.timeout(WAIT_S):
        while not agent.snapshot_requests:
            agent.arrived.clear()
            await agent.arrived.wait()
    assert agent.snapshot_requests == [SnapshotRequest(host=agent.host, after_seq=0)]
