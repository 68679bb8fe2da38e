"""Creates inject files and the password hash through the batcher: once per disk, in
shared batches, with faults that say what went wrong and never what was injected."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from agent.core.injection import BatchGroup, InjectionBatcher
from agent.core.jobs import JobRunner
from agent.core.workflows.create import CreateWorkflow
from agent.core.workflows.delete import DeleteWorkflow
from agent.model.injection import LOCKED_HASH, InjectionRequest, appliance_groups
from agent.model.job import JobKind, JobStatus
from agent.model.requests import CreateServer, PersonalityFile
from agent.model.states import Status
from tests.unit.core.conftest import ALICE, IMAGE_ID
from tests.unit.fakes.injector import FakeInjector


def personality(*pairs):
    return tuple(PersonalityFile(path=p, contents=base64.b64encode(c).decode()) for p, c in pairs)


async def test_files_and_password_hash_reach_the_injector_and_leave_the_job(world):
    server, _ = await world.create(personality=personality(("/etc/motd", b"hi\n"), ("/x//y", b"z")))
    await world.runner.idle()
    req = world.injector.injected[world.deps.files(server.id).disk]
    assert [(f.path, f.contents) for f in req.files] == [("/etc/motd", b"hi\n"), ("/x/y", b"z")]
    assert req.root_password_hash.startswith("$6$")
    assert world.store.get_server(server.id).status is Status.ACTIVE


async def test_payload_with_secrets_is_cleared_once_the_job_ends(world):
    await world.create(personality=personality(("/etc/motd", b"secret-contents")))
    [job] = world.store.unfinished_jobs()
    assert job.payload["personality"]
    await world.runner.idle()
    done = world.store.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.payload == {}


async def test_a_rejected_password_locks_root(world):
    server, _ = await world.create(admin_pass="weak")
    await world.runner.idle()
    req = world.injector.injected[world.deps.files(server.id).disk]
    assert req.root_password_hash == LOCKED_HASH
    assert world.store.get_server(server.id).status is Status.ERROR


async def test_injection_failure_is_a_fault_and_leaves_nothing(world):
    server, _ = await world.create()
    world.injector.fail_disks.add(world.deps.files(server.id).disk)
    await world.runner.idle()
    s = world.store.get_server(server.id)
    assert s.status is Status.ERROR
    assert "no recognisable root filesystem" in s.fault.message
    assert not world.deps.files(server.id).dir.exists()
    assert server.id not in world.hypervisor.domains


async def test_servers_created_together_share_one_injection_batch(world):
    world.service.limits = world.service.limits.model_copy(update={"max_total_instances": 8})
    for i in range(8):
        await world.create(name=f"s{i}")
    await world.runner.idle()
    assert world.batcher.batches == [8]
    assert len(world.injector.calls) == 1


async def test_resume_after_disk_checkpoint_remakes_the_disk_and_injects_once(world):
    world.runner._closing = True
    server, _ = await world.create(personality=personality(("/etc/motd", b"hi")))
    [job] = world.store.unfinished_jobs()
    await world.store.update_job(job.id, {"status": JobStatus.RUNNING, "step": "disk", "attempts": 1})
    disk = world.deps.files(server.id).disk
    disk.parent.mkdir(parents=True)
    disk.write_text("half-injected")
    runner = JobRunner(world.deps, {JobKind.CREATE: CreateWorkflow(world.deps, world.batcher),
                                    JobKind.DELETE: DeleteWorkflow(world.deps)})
    runner.resume_all()
    await runner.idle()
    assert disk.read_text().startswith("overlay of")
    assert len(world.injector.calls) == 1
    assert world.store.get_server(server.id).status is Status.ACTIVE


async def test_batcher_gives_each_waiter_its_own_result_or_error(tmp_path):
    injector = FakeInjector()
    bad = tmp_path / "bad.qcow2"
    injector.fail_disks.add(bad)
    batcher = InjectionBatcher(injector, window_s=0.01)
    good = batcher.inject(InjectionRequest(disk=tmp_path / "good.qcow2"))
    failing = batcher.inject(InjectionRequest(disk=bad))
    results = await asyncio.gather(good, failing, return_exceptions=True)
    assert results[0].disk == tmp_path / "good.qcow2"
    assert "root filesystem" in str(results[1])
    assert batcher.batches == [2]


async def test_requests_arriving_during_a_batch_form_the_next_one(tmp_path):
    injector = FakeInjector()
    batcher = InjectionBatcher(injector, window_s=0.01)
    first = asyncio.create_task(batcher.inject(InjectionRequest(disk=tmp_path / "a")))
    await asyncio.sleep(0.05)
    await asyncio.gather(first, batcher.inject(InjectionRequest(disk=tmp_path / "b")),
                         batcher.inject(InjectionRequest(disk=tmp_path / "c")))
    assert batcher.batches == [1, 2]


async def test_a_lone_request_does_not_wait_for_the_window(tmp_path):
    """No other build is making its disk: nobody to wait for (a 30 s window is not used)."""
    batcher = InjectionBatcher(FakeInjector(), window_s=30)
    result = await asyncio.wait_for(batcher.inject(InjectionRequest(disk=tmp_path / "a")), 5)
    assert result.disk == tmp_path / "a" and batcher.batches == [1]


async def test_a_request_waits_for_a_build_on_its_way_and_shares_its_batch(tmp_path):
    batcher = InjectionBatcher(FakeInjector(), window_s=30)
    leave = asyncio.Event()

    async def build_making_its_disk() -> None:
        with batcher.on_the_way():
            await leave.wait()
        await batcher.inject(InjectionRequest(disk=tmp_path / "late"))

    late = asyncio.create_task(build_making_its_disk())
    await asyncio.sleep(0)  # the late build is now on its way
    early = asyncio.create_task(batcher.inject(InjectionRequest(disk=tmp_path / "early")))
    await asyncio.sleep(0.05)
    assert not early.done() and batcher.batches == []
    leave.set()
    await asyncio.wait_for(asyncio.gather(early, late), 5)
    assert batcher.batches == [2]


async def test_a_build_on_its_way_holds_others_back_for_the_window_at_most(tmp_path):
    batcher = InjectionBatcher(FakeInjector(), window_s=0.05)
    with batcher.on_the_way():  # never arrives while the request waits
        await asyncio.wait_for(batcher.inject(InjectionRequest(disk=tmp_path / "a")), 5)
    assert batcher.batches == [1]


async def test_a_build_that_fails_on_its_way_releases_the_waiting_requests(tmp_path):
    batcher = InjectionBatcher(FakeInjector(), window_s=30)
    waiting = None
    try:
        with batcher.on_the_way():
            waiting = asyncio.create_task(batcher.inject(InjectionRequest(disk=tmp_path / "a")))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            raise OSError("its disk could not be made")
    except OSError:
        pass
    assert waiting is not None
    await asyncio.wait_for(waiting, 5)
    assert batcher.batches == [1]


async def test_a_multi_create_is_one_batch_even_when_a_disk_takes_longer_than_the_window(world):
    """The batch waits for every server of the request, not only for those whose disks
    were ready within the window: one appliance launch for the whole request."""
    world.service.limits = world.service.limits.model_copy(update={"max_total_instances": 8})
    slow = world.disks.create_overlay

    def create_overlay(base, base_format, dest, size_gib):
        if len(list(world.deps.instances_dir.glob("*/disk*"))) == 2:
            import time
            time.sleep(0.3)  # the third disk: 30 windows of 0.01 s late
        slow(base, base_format, dest, size_gib)

    world.disks.create_overlay = create_overlay
    made = await world.service.create_many(ALICE, CreateServer(
        name="web", image_ref=IMAGE_ID, flavor_ref="1", min_count=3, max_count=3))
    await world.runner.idle()
    assert world.batcher.batches == [3]
    [call] = world.injector.calls
    assert {r.disk for r in call} == {world.deps.files(s.id).disk for s in made.servers}
    assert all(world.store.get_server(s.id).status is Status.ACTIVE for s in made.servers)


async def test_a_batch_group_stops_waiting_at_its_deadline():
    """A member that never arrives (its build failed before injection) holds the others
    back only until the group's deadline."""
    injector = FakeInjector()
    batcher = InjectionBatcher(injector, window_s=0.01, group_wait_s=0.2)
    group = BatchGroup(key="r-test0001", size=3)
    disks = [Path(f"/d{i}") for i in range(2)]
    await asyncio.gather(*(batcher.inject(InjectionRequest(disk=d), group) for d in disks))
    assert batcher.batches == [2]


async def test_a_group_is_kept_whole_and_one_larger_than_max_batch_fills_batches_of_its_own():
    injector = FakeInjector()
    batcher = InjectionBatcher(injector, window_s=0.01, max_batch=4)
    lone = batcher.inject(InjectionRequest(disk=Path("/lone")))
    three = [batcher.inject(InjectionRequest(disk=Path(f"/g{i}")), BatchGroup("r-a", 3))
             for i in range(3)]
    six = [batcher.inject(InjectionRequest(disk=Path(f"/h{i}")), BatchGroup("r-b", 6))
           for i in range(6)]
    await asyncio.gather(lone, *three, *six)
    assert [sorted(str(r.disk) for r in call) for call in injector.calls] == [
        ["/g0", "/g1", "/g2", "/lone"], ["/h0", "/h1", "/h2", "/h3"], ["/h4", "/h5"]]


async def test_a_disk_a_guest_has_written_is_never_batched_with_other_disks(tmp_path):
    """An offline password change parses the tenant's own (possibly hostile) disk: it gets
    an appliance alone, while the fresh disks waiting with it still share one."""
    injector = FakeInjector()
    batcher = InjectionBatcher(injector, window_s=0.01)
    fresh = [InjectionRequest(disk=tmp_path / f"fresh{i}") for i in range(3)]
    used = [InjectionRequest(disk=tmp_path / f"used{i}", guest_written=True) for i in range(2)]
    order = [fresh[0], used[0], fresh[1], used[1], fresh[2]]
    results = await asyncio.gather(*(batcher.inject(r) for r in order))
    assert [r.disk for r in results] == [r.disk for r in order]
    assert [[r.disk.name for r in call] for call in injector.calls] == [
        ["fresh0", "fresh1", "fresh2"], ["used0"], ["used1"]]


def test_appliance_groups_put_each_guest_written_disk_alone(tmp_path):
    reqs = [InjectionRequest(disk=tmp_path / "a", guest_written=True),
            InjectionRequest(disk=tmp_path / "b"), InjectionRequest(disk=tmp_path / "c"),
            InjectionRequest(disk=tmp_path / "d", guest_written=True)]
    assert appliance_groups(reqs) == [[1, 2], [0], [3]]
    assert appliance_groups(reqs[1:3]) == [[0, 1]]
