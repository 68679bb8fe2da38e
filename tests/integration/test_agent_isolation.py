"""Two agents on one machine (issue 12's fleet on one host): each with its own host name,
state dir, instances folder and bridge, sharing libvirtd. One agent's start-up (the
sweep of domains and instance folders, then the network resync: bridges, taps, DHCP)
touches only what is its own: the other's domain, tap, instance folder and dnsmasq
(its leases) are left exactly as they were, with real libvirt, netlink and dnsmasq."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.adapters.dnsmasq import DnsmasqDhcp
from agent.adapters.folders import LocalFolders
from agent.adapters.image_catalog import WritableImageCatalog
from agent.adapters.netlink import NetlinkPlumber
from agent.adapters.qemu_img import QemuImgDisks
from agent.adapters.sqlite_store import SqliteStore
from agent.core.flavors import FlavorCatalog
from agent.core.guest_layout import InstanceFiles, domain_name
from agent.core.netplumbing import NetworkPlumbing
from agent.core.networks import NetworkCatalog
from agent.core.recovery import sweep
from agent.core.workflows.base import WorkflowDeps
from agent.model.domain import ConsoleSpec, DiskSpec, DomainSpec, InterfaceSpec
from agent.model.job import Job, JobKind
from agent.model.network import Network, Port, make_mac
from agent.model.server import Server
from agent.model.states import VmState
from tests.support.netns import dnsmasq_pids_under

pytestmark = pytest.mark.integration


@dataclass
class Agent:
    name: str
    state_dir: Path
    store: SqliteStore
    network: Network
    plumbing: NetworkPlumbing
    deps: WorkflowDeps


@pytest.fixture
def state_dirs() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def make_agent(name: str, network: Network, hypervisor, virt_type, state_dirs) -> Agent:  # type: ignore[no-untyped-def]
    state_dir = Path(tempfile.mkdtemp(prefix=f"ca-{name}-"))  # short: socket paths fit
    state_dirs.append(state_dir)
    state_dir.chmod(0o755)  # dnsmasq and QEMU run unprivileged: they must reach below
    (state_dir / "instances").mkdir()
    store = SqliteStore(state_dir / "agent.db")
    catalog = NetworkCatalog([network])
    plumbing = NetworkPlumbing(store, catalog, NetlinkPlumber(), DnsmasqDhcp(state_dir))
    deps = WorkflowDeps(store=store, hypervisor=hypervisor, disks=QemuImgDisks(),
                        images=WritableImageCatalog(state_dir / "images"), flavors=FlavorCatalog(),
                        instances_dir=state_dir / "instances", base_dir=state_dir / "_base",
                        virt_type=virt_type, network=plumbing)
    return Agent(name, state_dir, store, network, plumbing, deps)


async def add_guest(agent: Agent, hypervisor, created, vm_state: VmState) -> tuple[Server, Port]:  # type: ignore[no-untyped-def]
    """A server in the agent's store with one port on its network, its tap plugged and its
    domain defined as the agent defines one (its metadata, its disk under its instances)."""
    now = datetime.now(UTC)
    server = Server(id=uuid.uuid4(), project_id="p1", user_id="u", name=f"{agent.name}-vm",
                    image_id=uuid.uuid4(), flavor_id="1", vm_state=VmState.ACTIVE, task_state=None,
                    host=agent.name, created_at=now, updated_at=now)
    port = Port(id=uuid.uuid4(), network_id=agent.network.id, project_id="p1",
                mac=make_mac(os.urandom(3)), ip=agent.network.cidr[10], device_id=str(server.id),
                device_owner="compute:nova", created_by_agent=True, created_at=now)
    job = Job(id=uuid.uuid4(), server_id=server.id, kind=JobKind.CREATE, created_at=now,
              updated_at=now)
    await agent.store.create_server(server, job, [port])
    await agent.plumbing.plug_server(server.id)
    files = InstanceFiles(agent.deps.instances_dir, server.id)
    files.dir.mkdir()
    files.disk.write_bytes(b"")
    hypervisor.define(DomainSpec(
        uuid=server.id, name=domain_name(server.id), virt_type=agent.deps.virt_type, vcpus=1,
        memory_mib=64, disks=(DiskSpec(path=files.disk),),
        console=ConsoleSpec(socket_path=files.console_socket, log_path=files.console_log),
        interfaces=(InterfaceSpec(tap=port.tap, mac=port.mac),),
        metadata={"server_id": str(server.id), "host": agent.name}))
    created.append(server.id)
    if vm_state is VmState.DELETED:
        await agent.store.update_server(server.id, {"vm_state": VmState.DELETED}, cause="test")
    return server, port


async def bridge_members(bridge: str) -> set[str]:
    # pyroute2's sync API runs its own loop: off this one.
    return set(await asyncio.to_thread(NetlinkPlumber().bridge_members, bridge))


async def test_a_second_agents_start_up_leaves_the_first_agents_domain_tap_folder_and_dhcp_alone(
        hypervisor, created, testnet, virt_type, state_dirs):
    first = make_agent("hv-a", testnet.network(1, "10.213.71.0/24", port_security=False),
                       hypervisor, virt_type, state_dirs)
    second = make_agent("hv-b", testnet.network(2, "10.213.72.0/24", port_security=False),
                        hypervisor, virt_type, state_dirs)
    try:
        await first.plumbing.resync_host(hypervisor)  # the first agent runs: bridge, dnsmasq
        mine, my_port = await add_guest(first, hypervisor, created, VmState.ACTIVE)
        dhcp_before = dnsmasq_pids_under(first.state_dir)
        assert len(dhcp_before) == 1
        # The second agent has an orphan of its own (its server deleted): its sweep must act.
        orphan, orphan_port = await add_guest(second, hypervisor, created, VmState.DELETED)

        swept = await sweep(second.deps, LocalFolders())  # the second agent starts
        report = await second.plumbing.resync_host(hypervisor)

        assert swept.domains_removed == [orphan.id]  # its own orphan: gone
        assert orphan.id not in hypervisor.domain_uuids()
        assert orphan_port.tap not in await bridge_members(second.network.bridge)
        assert swept.quarantined == [] and swept.errors == [] and report.errors == []
        # The first agent's guest: domain, tap in its bridge, folder, disk, dnsmasq.
        assert mine.id in hypervisor.domain_uuids()
        assert my_port.tap in await bridge_members(first.network.bridge)
        assert InstanceFiles(first.deps.instances_dir, mine.id).disk.exists()
        assert dnsmasq_pids_under(first.state_dir) == dhcp_before
        assert my_port.tap not in report.taps_removed
    finally:
        for agent in (first, second):
            await agent.plumbing.close()
            agent.store.close()
