"""changePassword through the QEMU guest agent, with fakes: when the image declares an
agent, the guest runs and the agent answers, the hash is set in the running guest (no
shutdown, no disk write); every other case takes the offline path and the log says why,
without the password or its hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.core.sha512_crypt import sha512_crypt
from agent.errors import HypervisorError
from agent.model.domain import PowerState
from agent.model.states import Status, VmState
from tests.unit.core.actions.conftest import ALICE, ActionWorld

QGA_IMAGE_ID = "5d3c1f0e-9a8b-4c7d-8e6f-0a1b2c3d4e5f"
NEW_PASSWORD = "New-Passw0rd!"


def verifies(password: str, crypt_hash: str) -> bool:
    return sha512_crypt(password, crypt_hash.split("$")[2]) == crypt_hash


def add_image(aw: ActionWorld, name: str, image_id: str, properties: dict[str, str]) -> None:
    d = Path(aw.deps.images.dirs[0]) / name
    d.mkdir(parents=True)
    (d / "disk.qcow2").write_bytes(b"QFI\xfb base")
    (d / "manifest.json").write_text(json.dumps({
        "uuid": image_id, "name": name, "disk_file": "disk.qcow2", "min_disk": 1,
        "min_ram": 64, "kernel": "vmlinuz", "initrd": "initrd.img", "cmdline": "console=ttyS0",
        "properties": properties}))


@pytest.fixture
def qga(aw: ActionWorld) -> ActionWorld:
    """The world with a second image that declares a guest agent."""
    add_image(aw, "busybox-qga", QGA_IMAGE_ID, {"hw_qemu_guest_agent": "yes"})
    return aw


def guest_ops(aw: ActionWorld, sid, mark: int) -> list[str]:
    return [op for op, u in aw.hypervisor.calls[mark:] if u == sid]


async def change_password(aw: ActionWorld, sid) -> list[dict]:
    """POST changePassword and run it; the log events it wrote."""
    with capture_logs() as logs:
        assert (await aw.actions.change_password(ALICE, sid, NEW_PASSWORD)).status is Status.PASSWORD
        await aw.settle()
    return logs


def assert_no_secret(logs: list[dict], *secrets: str) -> None:
    text = repr(logs)
    for secret in secrets:
        assert secret not in text


async def test_a_server_of_a_guest_agent_image_gets_the_agent_channel(qga):
    sid = await qga.active(image_ref=QGA_IMAGE_ID)
    assert qga.hypervisor.domains[sid].guest_agent is True
    plain = await qga.active(name="plain")
    assert qga.hypervisor.domains[plain].guest_agent is False


async def test_the_guest_agent_sets_the_hash_in_the_running_guest(qga):
    sid = await qga.active(image_ref=QGA_IMAGE_ID)
    disk = qga.deps.files(sid).disk
    injected_at_create = qga.injector.injected[disk]
    mark = len(qga.hypervisor.calls)
    logs = await change_password(qga, sid)
    s = qga.server(sid)
    assert s.status is Status.ACTIVE and s.power_state is PowerState.RUNNING
    [(uuid, user, secret, crypted)] = qga.hypervisor.passwords_set
    assert (uuid, user, crypted) == (sid, "root", True) and verifies(NEW_PASSWORD, secret)
    ops = guest_ops(qga, sid, mark)
    assert ops == ["guest_agent_ready", "set_user_password"]  # no shutdown, no start
    assert qga.hypervisor.states[sid] is PowerState.RUNNING
    assert qga.injector.injected[disk] is injected_at_create  # the disk was not written
    assert qga.statuses(sid)[-2:] == ["PASSWORD", "ACTIVE"]
    assert [e["event"] for e in logs if e["event"].startswith("change_password.")] == [
        "change_password.online"]
    assert_no_secret(logs, NEW_PASSWORD, secret)


async def test_a_silent_guest_agent_falls_back_to_the_offline_path_and_says_why(qga):
    sid = await qga.active(image_ref=QGA_IMAGE_ID)
    qga.hypervisor.agent_silent.add(sid)  # qemu-ga not installed, or not started
    mark = len(qga.hypervisor.calls)
    logs = await change_password(qga, sid)
    assert qga.server(sid).status is Status.ACTIVE
    assert qga.hypervisor.passwords_set == []
    injected = qga.injector.injected[qga.deps.files(sid).disk]
    assert verifies(NEW_PASSWORD, injected.root_password_hash)
    assert injected.guest_written  # the guest's own disk: an appliance of its own
    ops = guest_ops(qga, sid, mark)
    assert ops[0] == "guest_agent_ready" and ops.index("shutdown") < ops.index("start")
    [why] = [e for e in logs if e["event"] == "change_password.offline"]
    assert why["reason"] == "the guest agent did not answer a ping"
    assert_no_secret(logs, NEW_PASSWORD, injected.root_password_hash)


async def test_an_agent_that_answers_but_fails_to_set_it_falls_back_too(qga):
    sid = await qga.active(image_ref=QGA_IMAGE_ID)
    qga.hypervisor.fail_on["set_user_password"] = HypervisorError(
        "unable to execute QEMU agent command 'guest-set-user-password'")
    mark = len(qga.hypervisor.calls)
    logs = await change_password(qga, sid)
    assert qga.server(sid).status is Status.ACTIVE
    injected = qga.injector.injected[qga.deps.files(sid).disk]
    assert verifies(NEW_PASSWORD, injected.root_password_hash)
    ops = guest_ops(qga, sid, mark)
    assert ops[:2] == ["guest_agent_ready", "set_user_password"] and "start" in ops
    [why] = [e for e in logs if e["event"] == "change_password.offline"]
    assert why["reason"].startswith("the guest agent did not set it")
    assert_no_secret(logs, NEW_PASSWORD, injected.root_password_hash)


async def test_an_image_without_an_agent_is_not_even_pinged(aw):
    sid = await aw.active()
    mark = len(aw.hypervisor.calls)
    logs = await change_password(aw, sid)
    assert aw.server(sid).status is Status.ACTIVE
    ops = guest_ops(aw, sid, mark)
    assert "guest_agent_ready" not in ops and "set_user_password" not in ops
    assert ops.index("shutdown") < ops.index("start")
    [why] = [e for e in logs if e["event"] == "change_password.offline"]
    assert why["reason"] == "the image declares no guest agent"


async def test_a_guest_that_is_off_is_changed_offline(qga):
    """A server in ERROR whose guest is off: no agent to ask, so the disk is written."""
    sid = await qga.active(image_ref=QGA_IMAGE_ID)
    qga.hypervisor.destroy(sid)
    await qga.set_state(sid, VmState.ERROR)
    mark = len(qga.hypervisor.calls)
    logs = await change_password(qga, sid)
    assert qga.server(sid).status is Status.ACTIVE and qga.server(sid).fault is None
    assert "guest_agent_ready" not in guest_ops(qga, sid, mark)
    assert verifies(NEW_PASSWORD, qga.injector.injected[qga.deps.files(sid).disk].root_password_hash)
    [why] = [e for e in logs if e["event"] == "change_password.offline"]
    assert why["reason"] == "the guest is not running"


async def test_the_agent_clears_the_error_of_a_refused_create_password_online(qga):
    server, _ = await qga.create(image_ref=QGA_IMAGE_ID, admin_pass=SecretStr("weak"))
    await qga.settle()
    sid = server.id
    assert qga.server(sid).status is Status.ERROR  # root locked, but the guest runs
    mark = len(qga.hypervisor.calls)
    await change_password(qga, sid)
    s = qga.server(sid)
    assert s.status is Status.ACTIVE and s.fault is None
    assert "shutdown" not in guest_ops(qga, sid, mark)
    [(_, _, secret, _)] = qga.hypervisor.passwords_set
    assert verifies(NEW_PASSWORD, secret)
