"""Rescue/unrescue and resize/confirm/revert through the wired core, with fakes: the
disks and domain they define, what is injected, and what stays on disk."""

from __future__ import annotations

import uuid

import pytest

from agent.core.sha512_crypt import sha512_crypt
from agent.core.workflows.guest_ops import rescue_disk
from agent.core.workflows.resize import ResizeFiles
from agent.errors import DiskError, InvalidInput, QuotaExceeded
from agent.model.domain import PowerState
from agent.model.job import JobKind
from agent.model.states import Status, TaskState, VmState
from tests.unit.core.actions.conftest import ALICE


def verifies(password: str, crypt_hash: str) -> bool:
    salt = crypt_hash.split("$")[2]
    return sha512_crypt(password, salt) == crypt_hash


async def test_rescue_boots_the_rescue_disk_with_the_servers_disk_second(aw):
    sid = await aw.active()
    password = await aw.actions.rescue(ALICE, sid)
    assert aw.server(sid).task_state is TaskState.RESCUING
    [job] = aw.store.unfinished_jobs()
    assert job.kind is JobKind.RESCUE and password not in str(job.payload)
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.RESCUE and s.power_state is PowerState.RUNNING
    disks = aw.hypervisor.domains[sid].disks
    assert [(d.path, d.target) for d in disks] == [
        (rescue_disk(aw.deps, sid), "vda"), (aw.deps.files(sid).disk, "vdb")]
    injected = aw.injector.injected[rescue_disk(aw.deps, sid)]
    assert injected.files == () and verifies(password, injected.root_password_hash)
    assert aw.store.get_job(job.id).payload == {}  # the hash is gone once used


async def test_a_given_rescue_password_is_returned_and_must_meet_the_policy(aw):
    sid = await aw.active()
    with pytest.raises(InvalidInput, match="password policy") as e:
        await aw.actions.rescue(ALICE, sid, admin_pass="weak")
    assert "weak" not in str(e.value)
    with pytest.raises(InvalidInput, match="image"):
        await aw.actions.rescue(ALICE, sid, rescue_image_ref="no-such-image")
    assert await aw.actions.rescue(ALICE, sid, admin_pass="Rescue-Passw0rd") == "Rescue-Passw0rd"
    await aw.settle()


async def test_unrescue_puts_the_servers_own_domain_back(aw):
    sid = await aw.active()
    await aw.actions.rescue(ALICE, sid)
    await aw.settle()
    await aw.actions.simple(ALICE, sid, "unrescue")
    assert aw.server(sid).task_state is TaskState.UNRESCUING
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.ACTIVE
    assert [d.path for d in aw.hypervisor.domains[sid].disks] == [aw.deps.files(sid).disk]
    assert not rescue_disk(aw.deps, sid).exists()


async def test_a_failed_rescue_puts_the_server_back_on_its_own_disk(aw):
    sid = await aw.active()
    aw.injector.fail_disks.add(rescue_disk(aw.deps, sid))
    await aw.actions.rescue(ALICE, sid)
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.SHUTOFF and "root filesystem" in s.fault.message
    assert [d.path for d in aw.hypervisor.domains[sid].disks] == [aw.deps.files(sid).disk]
    assert not rescue_disk(aw.deps, sid).exists()


async def test_stop_in_rescue_leaves_the_server_on_its_own_domain(aw):
    sid = await aw.active()
    await aw.actions.rescue(ALICE, sid)
    await aw.settle()
    await aw.actions.simple(ALICE, sid, "os-stop")
    await aw.settle()
    assert aw.server(sid).status is Status.SHUTOFF
    assert [d.target for d in aw.hypervisor.domains[sid].disks] == ["vda"]
    assert not rescue_disk(aw.deps, sid).exists()


async def test_resize_copies_the_disk_and_redefines_then_confirm_drops_the_old_disk(aw):
    sid = await aw.active()
    rf = ResizeFiles(aw.deps, sid)
    original = rf.disk.read_text()
    committed = await aw.actions.resize(ALICE, sid, "3")
    assert committed.status is Status.RESIZE
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.VERIFY_RESIZE and s.flavor_id == "3"
    spec = aw.hypervisor.domains[sid]
    assert (spec.vcpus, spec.memory_mib) == (2, 1024) and spec.metadata["flavor_id"] == "3"
    assert rf.disk.read_text() == f"copy of [{original}] size 4G"
    assert rf.orig.read_text() == original and rf.record.exists()
    assert aw.hypervisor.states[sid] is PowerState.RUNNING
    await aw.actions.simple(ALICE, sid, "confirmResize")
    await aw.settle()
    assert aw.server(sid).status is Status.ACTIVE
    assert not rf.orig.exists() and not rf.record.exists() and rf.disk.exists()


async def test_revert_resize_puts_the_old_disk_and_flavor_back(aw):
    sid = await aw.active()
    rf = ResizeFiles(aw.deps, sid)
    original = rf.disk.read_text()
    await aw.actions.resize(ALICE, sid, "2")
    await aw.settle()
    committed = await aw.actions.simple(ALICE, sid, "revertResize")
    assert committed.status is Status.REVERT_RESIZE
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.ACTIVE and s.flavor_id == "1"
    assert aw.hypervisor.domains[sid].memory_mib == 256
    assert rf.disk.read_text() == original
    assert not rf.orig.exists() and not rf.record.exists()
    assert aw.statuses(sid)[-4:] == ["RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE", "ACTIVE"]


async def test_a_stopped_server_stays_off_through_resize_and_confirm(aw):
    sid = await aw.active()
    await aw.actions.simple(ALICE, sid, "os-stop")
    await aw.settle()
    await aw.actions.resize(ALICE, sid, "2")
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.VERIFY_RESIZE and s.power_state is PowerState.SHUTDOWN
    assert aw.hypervisor.states[sid] is PowerState.SHUTDOWN
    await aw.actions.simple(ALICE, sid, "confirmResize")
    await aw.settle()
    assert aw.server(sid).status is Status.SHUTOFF


async def test_resize_refuses_the_same_a_smaller_or_an_unknown_flavor(aw):
    sid = await aw.active(flavor_ref="2")
    for ref, match in (("2", "must change flavor"), ("1", "smaller disk"),
                       ("9", "could not be found")):
        with pytest.raises(InvalidInput, match=match):
            await aw.actions.resize(ALICE, sid, ref)
    assert aw.server(sid).task_state is None and aw.store.unfinished_jobs() == []


async def test_resize_counts_the_growth_against_the_quota(aw):
    sid = await aw.active()
    aw.actions.servers.limits = aw.actions.servers.limits.model_copy(update={"max_total_cores": 1})
    with pytest.raises(QuotaExceeded, match="cores"):
        await aw.actions.resize(ALICE, sid, "3")


async def test_a_failed_resize_is_back_on_the_old_disk_and_flavor(aw):
    sid = await aw.active()
    rf = ResizeFiles(aw.deps, sid)
    original = rf.disk.read_text()
    aw.disks.fail_on["copy_resized"] = DiskError("qemu-img convert failed: no space left")
    await aw.actions.resize(ALICE, sid, "2")
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.SHUTOFF and s.flavor_id == "1" and "no space" in s.fault.message
    assert rf.disk.read_text() == original and not rf.orig.exists() and not rf.copy.exists()
    assert aw.hypervisor.domains[sid].memory_mib == 256


async def test_swapping_the_disks_again_after_a_restart_does_only_what_is_left(aw):
    rf = ResizeFiles(aw.deps, uuid.uuid4())
    rf.disk.parent.mkdir(parents=True, exist_ok=True)
    rf.disk.write_text("old")
    rf.copy.write_text("new")
    rf.disk.rename(rf.orig)  # a restart came between the two renames
    await rf.swap_in(rf.copy)
    assert (rf.disk.read_text(), rf.orig.read_text(), rf.copy.exists()) == ("new", "old", False)
    await rf.swap_in(rf.copy)  # and once more after both: nothing to do
    assert (rf.disk.read_text(), rf.orig.read_text()) == ("new", "old")


async def test_revert_without_the_record_fails_but_keeps_verify_resize(aw):
    sid = await aw.active()
    await aw.actions.resize(ALICE, sid, "2")
    await aw.settle()
    ResizeFiles(aw.deps, sid).record.unlink()
    await aw.actions.simple(ALICE, sid, "revertResize")
    await aw.settle()
    s = aw.server(sid)
    assert s.vm_state is VmState.RESIZED and s.status is Status.VERIFY_RESIZE
    assert "old flavor is not known" in s.fault.message
