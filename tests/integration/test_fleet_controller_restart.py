"""A real `compute-agent controller serve` SIGKILLed mid-flight and restarted (issue 12):
nothing lost, nothing duplicated. The test plays one agent over the real broker (its own
vhost): each job the controller committed reaches the agent (duplicates on the wire are
allowed: the job id is the agent's idempotency key, so each job takes effect once), and
the agent's events sent while the controller was dead are applied after its restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from agent.adapters.amqp_bus import AmqpBus, AmqpSettings
from agent.model.domain import PowerState
from agent.model.fleet import JobMessage, JobTicket
from agent.model.states import Status, VmState
from tests.conftest import REPO
from tests.integration.test_amqp_bus import SECRET, broker_running  # noqa: F401 - autouse
from tests.integration.test_fleet_controller import (
    ADMIN,
    ALICE,
    FLEET_SECRET,
    IMAGE_ID,
    NET,
    WAIT_S,
    PlayedAgent,
    amqp,
    host_name,
    vhost,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.integration

COUNT = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, vhost_name: str, port: int) -> Path:
    token = root / "fleet.secret"
    token.write_text(FLEET_SECRET)
    token.chmod(0o600)
    config = root / "controller.toml"
    config.write_text(f"""
state_dir = "{root / 'state'}"
api_listen = "127.0.0.1:{port}"
host = "controller"
image_dirs = ["{REPO / 'vm-images' / 'build'}"]
log_format = "json"

[[tokens]]
token = "tok-alice"
project_id = "p-alice"
user_id = "alice"

[[tokens]]
token = "tok-admin"
project_id = "p-admin"
user_id = "root"
admin = true

[[networks]]
id = "{NET.id}"
name = "{NET.name}"
bridge = "{NET.bridge}"
cidr = "{NET.cidr}"
default = true

[limits]
max_total_instances = {COUNT}
max_total_cores = {COUNT}
max_total_ram = {COUNT * 1024}

[amqp]
vhost = "{vhost_name}"
password_file = "{SECRET}"
heartbeat_s = 2
reconnect_initial_s = 0.2
reconnect_max_s = 2.0
fleet_token_file = "{token}"
""")
    return config


class ControllerProcess:
    """`python -m agent controller serve`, started and ended by the test (by its pid)."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "--config", str(self.config), "controller", "serve"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    async def serving(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client, \
                asyncio.timeout(WAIT_S):
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/v2.1")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=60)
        return self.proc.returncode


@pytest.fixture
def controller_process(vhost: str) -> Iterator[ControllerProcess]:  # noqa: F811
    with tempfile.TemporaryDirectory(prefix="ctlk-", dir="/tmp") as tmp:
        port = free_port()
        process = ControllerProcess(write_config(Path(tmp), vhost, port), port, Path(tmp) / "log")
        try:
            yield process
        finally:
            if process.proc is not None:
                process.stop()


class PatientAgent(PlayedAgent):
    """Fetches a ticket until the controller answers (it may be dead and restarting)."""

    async def on_job(self, message: JobMessage) -> None:
        self.deliveries.append(message)
        if message.job_id not in self.tickets:
            async with asyncio.timeout(WAIT_S):
                while True:
                    try:
                        r = await self.api.get(f"{message.payload_ref}?host={self.host}",
                                               headers={"X-Fleet-Token": FLEET_SECRET})
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
            r.raise_for_status()
            self.tickets[message.job_id] = JobTicket.model_validate_json(r.content)
        self.arrived.set()

    def kinds(self, kind: str) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Server id -> the job ids of its tickets of that kind (the effects)."""
        out: dict[uuid.UUID, list[uuid.UUID]] = {}
        for ticket in self.tickets.values():
            if ticket.job.kind.value == kind:
                out.setdefault(ticket.server.id, []).append(ticket.job.id)
        return out

    async def until_jobs(self, kind: str, count: int) -> None:
        async with asyncio.timeout(WAIT_S * 2):
            while len(self.kinds(kind)) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def _agent(vhost_name: str, api: httpx.AsyncClient) -> tuple[PatientAgent, AmqpBus]:
    name = host_name("k")
    bus = AmqpBus(AmqpSettings.from_config(amqp(vhost_name, name), name))
    await bus.start()
    await bus.wait_connected(WAIT_S)
    agent = PatientAgent(name, bus, api)
    await bus.consume_jobs(agent.on_job)
    return agent, bus


async def _until_first_delivery(agent: PatientAgent, kind: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not any(m.kind.value == kind for m in agent.deliveries):
            await asyncio.sleep(0.001)


async def _statuses(api: httpx.AsyncClient) -> dict[str, str]:
    r = await api.get("/v2.1/servers/detail", headers=ALICE)
    assert r.status_code == 200, r.text
    return {s["id"]: s["status"] for s in r.json()["servers"]}


async def test_a_controller_killed_mid_flight_loses_and_duplicates_nothing(controller_process, vhost):  # noqa: F811
    process = controller_process
    process.start()
    await process.serving()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.port}", timeout=30) as api:
        agent, bus = await _agent(vhost, api)
        try:
            await _run(process, api, agent)
        finally:
            await bus.close()
    assert process.stop() == 0  # a clean stop after all that (SIGTERM)


async def _run(process: ControllerProcess, api: httpx.AsyncClient, agent: PatientAgent) -> None:
    await agent.heartbeat()
    async with asyncio.timeout(WAIT_S):
        while (await api.get("/v2.1/servers", headers=ALICE)).status_code != 200:
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the heartbeat applied (the host is known) before placement
    r = await api.post("/v2.1/servers", headers=ALICE, json={"server": {
        "name": "web", "imageRef": IMAGE_ID, "flavorRef": "1", "min_count": COUNT}})
    assert r.status_code == 202, r.text

    # Killed while it dispatches the 12 creates: some are out, some not yet.
    await _until_first_delivery(agent, "create")
    process.kill()
    delivered_before = len(agent.deliveries)
    process.start()
    await process.serving()
    await agent.until_jobs("create", COUNT)

    creates = agent.kinds("create")
    assert len(creates) == COUNT and all(len(jobs) == 1 for jobs in creates.values())
    ips = [str(p.ip) for t in agent.tickets.values() for p in t.ports]
    assert len(ips) == COUNT == len(set(ips))  # the controller's IPAM: each address once
    assert set(map(str, creates)) == set(await _statuses(api))

    # The agent's events while the controller is dead again: applied after its restart.
    await agent.heartbeat()
    process.kill()
    for server_id in creates:
        await agent.event(str(server_id), Status.ACTIVE, vm_state=VmState.ACTIVE, task_state=None,
                          power_state=PowerState.RUNNING, progress=100, launched_at=datetime.now(UTC))
    process.start()
    await process.serving()
    async with asyncio.timeout(WAIT_S):
        while set((await _statuses(api)).values()) != {"ACTIVE"}:
            await asyncio.sleep(0.1)

    # Deletes, killed mid-way again.
    for server_id in creates:
        r = await api.delete(f"/v2.1/servers/{server_id}", headers=ALICE)
        assert r.status_code == 204, r.text
    await _until_first_delivery(agent, "delete")
    process.kill()
    process.start()
    await process.serving()
    await agent.until_jobs("delete", COUNT)
    deletes = agent.kinds("delete")
    assert set(deletes) == set(creates) and all(len(jobs) == 1 for jobs in deletes.values())
    for server_id in creates:
        await agent.event(str(server_id), Status.DELETED, vm_state=VmState.DELETED, task_state=None,
                          power_state=PowerState.NOSTATE, deleted_at=datetime.now(UTC))
    async with asyncio.timeout(WAIT_S):
        while await _statuses(api):
            await asyncio.sleep(0.1)
    r = await api.get("/v2.0/ports", headers=ADMIN)
    assert r.json()["ports"] == []  # every address back
    # Each job id at least once on the wire; the effects above were once each.
    assert {m.job_id for m in agent.deliveries} == set(agent.tickets)
    assert len(agent.deliveries) >= delivered_before

