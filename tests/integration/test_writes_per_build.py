"""How many write transactions (each one an fsync of the WAL) one build costs through the
real SqliteStore: the POST, the job's start, its steps and its end. The guest side is faked
(hypervisor, disks, injector, network plumbing): only the store's commits are counted."""

from __future__ import annotations

import uuid
from pathlib import Path

from agent.adapters.image_catalog import ManifestImageCatalog
from agent.adapters.sqlite_store import SqliteStore
from agent.core.flavors import FlavorCatalog
from agent.core.injection import InjectionBatcher
from agent.core.jobs import JobRunner
from agent.core.netplumbing import NetworkPlumbing
from agent.core.networks import NetworkCatalog, PortService
from agent.core.servers import ServerService
from agent.core.workflows.base import WorkflowDeps
from agent.core.workflows.create import CreateWorkflow
from agent.core.workflows.delete import DeleteWorkflow
from agent.model.host import VirtType
from agent.model.job import JobKind, JobStatus
from agent.model.network import Network, NetworkRequest, PortStatus
from agent.model.passwords import PasswordPolicy
from agent.model.requests import CreateServer, Limits
from agent.model.states import Status
from tests.unit.core.conftest import ALICE, IMAGE_ID, write_image
from tests.unit.fakes.hypervisor import FakeDisks, FakeHypervisor
from tests.unit.fakes.injector import FakeInjector
from tests.unit.fakes.network import FakeDhcp, FakePlumber

# The POST (server, job, port and first event: 1), the job's start (1), its steps
# "injected", "domain", "started" (3), the port ACTIVE once plugged (1), and the last step
# "running" with the job's end (1).
MAX_WRITES_PER_BUILD = 7
NET = Network(id=uuid.UUID("44444444-4444-4444-8444-444444444444"), name="net-w",
              bridge="brW", cidr="10.213.4.0/24")


async def test_one_build_with_a_nic_commits_at_most_seven_write_transactions(tmp_path: Path):
    write_image(tmp_path / "images")
    store = SqliteStore(tmp_path / "state.db")
    catalog = NetworkCatalog([NET])
    deps = WorkflowDeps(store=store, hypervisor=FakeHypervisor(), disks=FakeDisks(),
                        images=ManifestImageCatalog(tmp_path / "images"),
                        flavors=FlavorCatalog(), instances_dir=tmp_path / "instances",
                        base_dir=tmp_path / "_base", virt_type=VirtType.QEMU,
                        network=NetworkPlumbing(store, catalog, FakePlumber(), FakeDhcp()))
    runner = JobRunner(deps, {
        JobKind.CREATE: CreateWorkflow(deps, InjectionBatcher(FakeInjector(), window_s=0.01)),
        JobKind.DELETE: DeleteWorkflow(deps)}, retry_backoff_s=0.001)
    service = ServerService(store, deps.images, deps.flavors, Limits(max_total_instances=3),
                            PasswordPolicy(), kick=runner.kick, ports=PortService(store, catalog))
    try:
        before = store.write_transactions
        server, _ = await service.create(ALICE, CreateServer(
            name="counted", image_ref=IMAGE_ID, flavor_ref="1",
            networks=(NetworkRequest(network_id=str(NET.id)),)))
        [job] = store.unfinished_jobs()  # not started yet: the runner runs at the next await
        await runner.idle()
        writes = store.write_transactions - before

        built = store.get_server(server.id)
        assert built.status is Status.ACTIVE and built.progress == 100, built.fault
        [port] = store.list_ports(device_id=str(server.id))
        assert port.status is PortStatus.ACTIVE
        job = store.get_job(job.id)
        assert (job.status, job.step, job.payload) == (JobStatus.SUCCEEDED, "running", {})
        print(f"write transactions for one build: {writes}")
        assert writes <= MAX_WRITES_PER_BUILD, f"{writes} write transactions for one build"
    finally:
        store.close()

