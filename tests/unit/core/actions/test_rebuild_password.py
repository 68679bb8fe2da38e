"""Rebuild and changePassword through the wired core, with fakes: what goes into which
disk, what the server shows meanwhile and after, and the ERROR a refused create password
left being cleared."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from agent.core.sha512_crypt import sha512_crypt
from agent.errors import InvalidInput
from agent.model.actions import RebuildServer
from agent.model.injection import LOCKED_HASH
from agent.model.job import JobKind
from agent.model.requests import PersonalityFile
from agent.model.states import Status, TaskState, VmState
from tests.unit.core.actions.conftest import ALICE
from tests.unit.core.conftest import IMAGE_ID


def verifies(password: str, crypt_hash: str) -> bool:
    return sha512_crypt(password, crypt_hash.split("$")[2]) == crypt_hash


def rebuild_request(**kw) -> RebuildServer:
    return RebuildServer(**{"image_ref": IMAGE_ID, **kw})


async def test_rebuild_replaces_the_disk_with_new_files_and_password(aw):
    sid = await aw.active(metadata={"old": "1"})
    disk = aw.deps.files(sid).disk
    disk.write_text("the old disk, with the user's data")
    motd = PersonalityFile(path="/etc/motd", contents=SecretStr(base64.b64encode(b"hi\n").decode()))
    server, password = await aw.actions.rebuild(ALICE, sid, rebuild_request(
        name="rebuilt", metadata={"new": "2"}, personality=(motd,)))
    assert server.status is Status.REBUILD and server.task_state is TaskState.REBUILDING
    assert (server.name, server.metadata) == ("rebuilt", {"new": "2"})
    [job] = aw.store.unfinished_jobs()
    assert job.kind is JobKind.REBUILD and password not in str(job.payload)
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.ACTIVE and s.progress == 100
    assert "old disk" not in disk.read_text() and disk.read_text().startswith("overlay of")
    fresh = disk.with_name("disk.rebuild.qcow2")
    injected = aw.injector.injected[fresh]  # injected before it took the disk's name
    assert [f.path for f in injected.files] == ["/etc/motd"] and injected.files[0].contents == b"hi\n"
    assert verifies(password, injected.root_password_hash)
    assert not fresh.exists()
    assert aw.statuses(sid)[-2:] == ["REBUILD", "ACTIVE"]


async def test_rebuild_checks_its_input_before_committing_anything(aw):
    sid = await aw.active()
    with pytest.raises(InvalidInput, match="image"):
        await aw.actions.rebuild(ALICE, sid, rebuild_request(image_ref="nope"))
    with pytest.raises(InvalidInput, match="password policy"):
        await aw.actions.rebuild(ALICE, sid, rebuild_request(admin_pass=SecretStr("short")))
    with pytest.raises(InvalidInput):
        await aw.actions.rebuild(ALICE, sid, rebuild_request(name=" padded "))
    assert aw.store.unfinished_jobs() == [] and aw.server(sid).status is Status.ACTIVE


async def test_change_password_sets_the_hash_offline_and_starts_again(aw):
    sid = await aw.active()
    mark = len(aw.hypervisor.calls)
    committed = await aw.actions.change_password(ALICE, sid, "New-Passw0rd!")
    assert committed.status is Status.PASSWORD
    await aw.settle()
    assert aw.server(sid).status is Status.ACTIVE
    injected = aw.injector.injected[aw.deps.files(sid).disk]
    assert injected.files == () and verifies("New-Passw0rd!", injected.root_password_hash)
    ops = [op for op, u in aw.hypervisor.calls[mark:] if u == sid]
    assert ops.index("shutdown") < ops.index("start")


async def test_change_password_clears_the_error_of_a_refused_create_password(aw):
    server, _ = await aw.create(admin_pass=SecretStr("weak"))
    await aw.settle()
    sid = server.id
    assert aw.server(sid).status is Status.ERROR
    assert aw.injector.injected[aw.deps.files(sid).disk].root_password_hash == LOCKED_HASH
    committed = await aw.actions.change_password(ALICE, sid, "Fixed-Passw0rd")
    assert committed.task_state is TaskState.UPDATING_PASSWORD and committed.status is Status.PASSWORD
    await aw.settle()
    s = aw.server(sid)
    assert s.status is Status.ACTIVE and s.fault is None
    assert verifies("Fixed-Passw0rd", aw.injector.injected[aw.deps.files(sid).disk].root_password_hash)


async def test_a_failed_change_password_keeps_the_error_and_says_why(aw):
    server, _ = await aw.create(admin_pass=SecretStr("weak"))
    await aw.settle()
    aw.injector.fail_disks.add(aw.deps.files(server.id).disk)
    await aw.actions.change_password(ALICE, server.id, "Fixed-Passw0rd")
    await aw.settle()
    s = aw.server(server.id)
    assert s.status is Status.ERROR and "root filesystem" in s.fault.message


async def test_change_password_refuses_a_password_below_the_policy(aw):
    sid = await aw.active()
    with pytest.raises(InvalidInput, match="password policy") as e:
        await aw.actions.change_password(ALICE, sid, "lower-only")
    assert "lower-only" not in str(e.value)


async def test_rebuild_pulls_the_plug_and_recovers_a_server_whose_domain_is_gone(aw):
    sid = await aw.active()
    aw.hypervisor.undefine(sid)  # lost behind the agent's back
    await aw.set_state(sid, VmState.ERROR)
    mark = len(aw.hypervisor.calls)
    await aw.actions.rebuild(ALICE, sid, rebuild_request())
    await aw.settle()
    assert aw.server(sid).status is Status.ACTIVE and aw.server(sid).fault is None
    ops = [op for op, u in aw.hypervisor.calls[mark:] if u == sid]
    assert "shutdown" not in ops and ops[-2:] == ["define", "start"]
