"""A whole core wired to in-memory fakes: service, job runner and workflows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.adapters.image_catalog import ManifestImageCatalog
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
from agent.model.job import JobKind
from agent.model.passwords import PasswordPolicy
from agent.model.requests import CreateServer, Limits, RequestContext
from tests.unit.fakes.hypervisor import FakeDisks, FakeHypervisor
from tests.unit.fakes.injector import FakeInjector
from tests.unit.fakes.network import FakeDhcp, FakePlumber
from tests.unit.fakes.store import MemoryStore

IMAGE_ID = "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"
ALICE = RequestContext(project_id="alice-project", user_id="alice")
BOB = RequestContext(project_id="bob-project", user_id="bob")


def write_image(root: Path) -> None:
    d = root / "busybox-test"
    d.mkdir(parents=True)
    (d / "disk.qcow2").write_bytes(b"QFI\xfb base")
    (d / "manifest.json").write_text(json.dumps({
        "uuid": IMAGE_ID, "name": "busybox-test", "disk_file": "disk.qcow2", "min_disk": 1,
        "min_ram": 64, "kernel": "vmlinuz", "initrd": "initrd.img", "cmdline": "console=ttyS0"}))


@dataclass
class World:
    store: MemoryStore
    hypervisor: FakeHypervisor
    disks: FakeDisks
    deps: WorkflowDeps
    runner: JobRunner
    service: ServerService
    checkpoints: list[str]
    injector: FakeInjector
    batcher: InjectionBatcher

    async def create(self, ctx: RequestContext = ALICE, **kw):
        req = CreateServer(**{"name": "web-1", "image_ref": IMAGE_ID, "flavor_ref": "1", **kw})
        return await self.service.create(ctx, req)


@pytest.fixture
def world(tmp_path: Path) -> World:
    write_image(tmp_path / "images")
    store, hv, disks = MemoryStore(), FakeHypervisor(), FakeDisks()
    checkpoints: list[str] = []
    deps = WorkflowDeps(store=store, hypervisor=hv, disks=disks,
                        images=ManifestImageCatalog(tmp_path / "images"), flavors=FlavorCatalog(),
                        instances_dir=tmp_path / "instances", base_dir=tmp_path / "_base",
                        virt_type=VirtType.QEMU,
                        network=NetworkPlumbing(store, NetworkCatalog([]), FakePlumber(), FakeDhcp()),
                        on_checkpoint=lambda job, step: checkpoints.append(f"{job.kind}:{step}"))
    injector = FakeInjector()
    batcher = InjectionBatcher(injector, window_s=0.01)
    runner = JobRunner(deps, {JobKind.CREATE: CreateWorkflow(deps, batcher),
                              JobKind.DELETE: DeleteWorkflow(deps)}, retry_backoff_s=0.001)
    service = ServerService(store, deps.images, deps.flavors, Limits(max_total_instances=3),
                            PasswordPolicy(), kick=runner.kick, ports=PortService(store, NetworkCatalog()))
    return World(store, hv, disks, deps, runner, service, checkpoints, injector, batcher)
