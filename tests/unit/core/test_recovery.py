"""After a kill -9: jobs whose last step landed are not redone; the start-up sweep
removes what the store says is deleted, quarantines what the store does not know (an older or
lost agent.db must not cost guests their disks), and touches nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from uuid import UUID

from agent.adapters.folders import LocalFolders
from agent.core.guest_layout import InstanceFiles, build_domain_spec
from agent.core.jobs import JobRunner
from agent.core.recovery import quarantine_check, sweep
from agent.core.workflows.create import CreateWorkflow
from agent.core.workflows.delete import DeleteWorkflow
from agent.model.domain import PowerState
from agent.model.flavor import Flavor
from agent.model.host import VirtType
from agent.model.job import JobKind, JobStatus
from agent.model.states import Status
from tests.unit.core.conftest import ALICE
from tests.unit.fakes.folders import FakeFolders

TINY = Flavor(id="1", name="m1.tiny", vcpus=1, ram=256, disk=1)


def restarted(world) -> JobRunner:
    return JobRunner(world.deps, {JobKind.CREATE: CreateWorkflow(world.deps, world.batcher),
                                  JobKind.DELETE: DeleteWorkflow(world.deps)})


async def test_a_create_recorded_at_its_last_step_but_still_running_is_closed_as_succeeded(world):
    """A database from before the final step and the job's end were one commit: the job
    is closed, the build not redone."""
    server, _ = await world.create()
    [job] = world.store.unfinished_jobs()
    await world.runner.idle()
    launched = world.store.get_server(server.id).launched_at
    await world.store.update_job(job.id, {"status": JobStatus.RUNNING, "step": "running"})
    runner = restarted(world)
    assert runner.resume_all() == 1
    await runner.idle()
    assert world.store.get_job(job.id).status is JobStatus.SUCCEEDED
    s = world.store.get_server(server.id)
    assert s.status is Status.ACTIVE and s.launched_at == launched


class Died(BaseException):
    """Stands for the daemon's death (kill -9) right after a commit."""


async def test_a_delete_killed_right_after_its_last_step_has_already_ended(world):
    """The last step's server change and the job's end are one commit: a daemon killed
    right after it leaves nothing to resume, so the delete is never redone."""
    server, _ = await world.create()
    await world.runner.idle()

    def crash(job, step):
        if step == "deleted":
            raise Died
    world.deps.on_checkpoint = crash
    await world.service.delete(ALICE, server.id)
    [job] = world.store.unfinished_jobs()
    with contextlib.suppress(Died):
        await asyncio.gather(*world.runner._active.values())
    assert world.store.get_job(job.id).status is JobStatus.SUCCEEDED
    assert world.store.unfinished_jobs() == []
    assert world.store.get_server(server.id).status is Status.DELETED


def _stray(world, server_id, instances_dir=None):
    files = InstanceFiles(instances_dir or world.deps.instances_dir, server_id)
    files.dir.mkdir(parents=True)
    files.disk.write_text("overlay")
    image = world.deps.images.list()[0]
    world.hypervisor.define(build_domain_spec(server_id, image, TINY, files, VirtType.QEMU,
                                              metadata={"server_id": str(server_id)}))
    world.hypervisor.start(server_id)


async def test_sweep_removes_what_the_store_says_is_deleted_and_quarantines_the_unknown(world, tmp_path):
    live, _ = await world.create(name="live")
    gone, _ = await world.create(name="gone")
    await world.runner.idle()
    await world.service.delete(ALICE, gone.id)
    await world.runner.idle()
    _stray(world, gone.id)  # a deleted server's guest came back (a lost teardown)
    unknown = uuid.uuid4()
    _stray(world, unknown)  # a server this store never heard of (an older agent.db restored)
    (world.deps.files(unknown).dir / "disk.qcow2.tmp").write_text("left as it is")
    other = uuid.uuid4()
    _stray(world, other, tmp_path / "other-agent")  # another agent's: not ours to touch
    lone = world.deps.instances_dir / str(uuid.uuid4())  # a folder the store never heard of
    lone.mkdir()
    not_ours = world.deps.instances_dir / "README"
    not_ours.write_text("left alone")
    tmp_disk = world.deps.files(live.id).dir / "disk.qcow2.tmp"
    tmp_disk.write_text("half")
    world.deps.base_dir.mkdir(parents=True, exist_ok=True)
    tmp_base = world.deps.base_dir / "img.qcow2.tmp"
    tmp_base.write_text("half")

    report = await sweep(world.deps, LocalFolders())

    assert report.domains_removed == [gone.id] and report.dirs_removed == []
    assert not world.deps.files(gone.id).dir.exists()
    assert set(world.hypervisor.domains) == {live.id, other, unknown}
    assert world.hypervisor.states[unknown] is PowerState.RUNNING  # not even stopped
    assert world.deps.files(unknown).disk.read_text() == "overlay"
    assert (world.deps.files(unknown).dir / "disk.qcow2.tmp").exists() and lone.exists()
    assert sorted((q.kind, q.server_id) for q in report.quarantined) == sorted(
        [("domain", unknown), ("instance_dir", unknown), ("instance_dir", UUID(lone.name))])
    assert world.deps.files(live.id).disk.exists() and not_ours.exists()
    assert not tmp_disk.exists() and not tmp_base.exists()
    assert (tmp_path / "other-agent" / str(other)).exists()
    assert report.errors == []
    assert world.store.get_server(live.id).status is Status.ACTIVE


async def test_doctor_names_each_quarantined_domain_and_folder_until_the_store_knows_them(world):
    known = {s.id for s in world.store.list_servers(include_deleted=True)}
    assert quarantine_check(known, world.hypervisor, LocalFolders(), world.deps.instances_dir).ok
    unknown = uuid.uuid4()
    _stray(world, unknown)
    lone = world.deps.instances_dir / str(uuid.uuid4())
    lone.mkdir()

    result = quarantine_check(known, world.hypervisor, LocalFolders(), world.deps.instances_dir)

    assert not result.ok and not result.required  # a warning: the host can still provision
    assert f"domain {unknown}" in result.detail and str(lone) in result.detail
    assert str(world.deps.files(unknown).dir) in result.detail
    assert "virsh undefine" in result.fix
    assert quarantine_check(known | {unknown, UUID(lone.name)}, world.hypervisor, LocalFolders(),
                            world.deps.instances_dir).ok


async def test_a_temp_file_that_will_not_go_is_an_error_and_the_sweep_goes_on(world):
    """Through the Folders port (in memory): the stuck file is reported, the other removed,
    a file at the top of the instances folder is not a guest's folder, and nothing raises."""
    live, _ = await world.create(name="live")
    await world.runner.idle()
    folders = FakeFolders()
    guest = folders.add(world.deps.files(live.id).dir, folder=True)
    stuck = folders.add(guest / "disk.qcow2.tmp")
    folders.stuck.add(stuck)
    half = folders.add(world.deps.base_dir / "img.qcow2.tmp")
    folders.add(world.deps.instances_dir / f"{uuid.uuid4()}", folder=False)  # a file, not a guest's

    report = await sweep(world.deps, folders)

    assert report.errors == [f"{stuck}: Permission denied"]
    assert report.temp_files_removed == [str(half)]
    assert folders.exists(stuck) and not folders.exists(half)
    assert report.quarantined == [] and report.dirs_removed == []
