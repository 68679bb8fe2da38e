"""changePassword through the QEMU guest agent, on a real guest of the busybox-qga image
(qemu-ga on a virtio-serial channel) with the real daemon: the password changes while the
guest runs (its uptime goes on, libvirt's domain id stays, no SHUTOFF event), the new
password logs in on the console and the old one is refused. With qemu-ga stopped in the
guest, the same action falls back to the offline path (the guest reboots) and still
works. One daemon and one guest serve the module, in file order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.acting import ServerUnderTest, module_daemon, query, virsh
from tests.support.console import LoginFailed
from tests.support.daemon import Daemon

QGA_IMAGE_ID = "5d3c1f0e-9a8b-4c7d-8e6f-0a1b2c3d4e5f"  # busybox-qga, fixed by vm-images/build_qga.py
GUEST_PING = '{"execute": "guest-ping"}'

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent() -> Iterator[Daemon]:
    with module_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def server(agent: Daemon) -> ServerUnderTest:
    return ServerUnderTest.create(agent, imageRef=QGA_IMAGE_ID, adminPass="First-Passw0rd")


def agent_answers(server_id: str) -> bool:
    answer = virsh("qemu-agent-command", server_id, GUEST_PING).strip()  # empty on an error
    return bool(answer) and json.loads(answer) == {"return": {}}


def wait_agent(server: ServerUnderTest, timeout: float = 120) -> None:
    """Until qemu-ga in the guest answers a ping through libvirt (it starts in the
    background of the guest's boot). Bounded."""
    deadline = time.monotonic() + timeout
    while not agent_answers(server.id):
        if time.monotonic() > deadline:
            markers = [line for line in (server.dir / "console.log").read_text(
                errors="replace").splitlines() if "CA-GUEST" in line]
            raise AssertionError(f"guest agent silent for {timeout}s; console: {markers}")
        time.sleep(1)


def domain_id(server_id: str) -> str:
    """libvirt's id of the running domain: a new one each time the guest starts."""
    return virsh("domid", server_id).strip()


def log_events(agent: Daemon, event: str) -> list[dict]:
    events = []
    for line in agent.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            events.append(entry)
    return events


def test_the_guest_agent_changes_the_password_without_a_reboot(agent, server):
    wait_agent(server)
    with server.shell() as con:
        before = server.uptime(con)
    started_as = domain_id(server.id)
    seq = server.last_seq()
    asked = time.monotonic()
    server.act({"changePassword": {"adminPass": "Second-Passw0rd"}})
    server.wait("ACTIVE")
    assert server.statuses_since(seq) == ["PASSWORD", "ACTIVE"]  # no SHUTOFF on the way
    shutoff = query(agent, "SELECT seq FROM events WHERE server_id = ? AND seq > ? AND"
                    " new_status = 'SHUTOFF'", server.id, seq)
    assert shutoff == []
    assert domain_id(server.id) == started_as  # the same QEMU process: never shut off
    with server.shell("Second-Passw0rd") as con:
        after = server.uptime(con)
        rc, out = con.run("id -u")
        assert (rc, out.strip()) == (0, "0")
    # Up longer than the action took, and still counting: a reboot would have reset it.
    assert after > before and after > time.monotonic() - asked, (before, after)
    with pytest.raises(LoginFailed), server.shell("First-Passw0rd"):
        pass
    [online] = log_events(agent, "change_password.online")
    assert online["server_id"] == server.id and not log_events(agent, "change_password.offline")
    server.password = "Second-Passw0rd"


def test_with_the_agent_stopped_the_password_is_changed_offline(agent, server):
    with server.shell() as con:
        rc, out = con.run("killall qemu-ga; sleep 1; pidof qemu-ga")
        assert rc == 1, out  # pidof: no such process left
    assert not agent_answers(server.id)
    started_as = domain_id(server.id)
    asked = time.monotonic()
    server.act({"changePassword": {"adminPass": "Third-Passw0rd"}})
    server.wait("ACTIVE")
    assert domain_id(server.id) != started_as  # shut down, disk written, started again
    with server.shell("Third-Passw0rd") as con:
        assert server.uptime(con) < time.monotonic() - asked
    with pytest.raises(LoginFailed), server.shell("Second-Passw0rd"):
        pass
    [offline] = log_events(agent, "change_password.offline")
    assert offline["reason"] == "the guest agent did not answer a ping"
    server.password = "Third-Passw0rd"
    wait_agent(server)  # rcS started it again on the fresh boot


def test_no_password_or_hash_reached_the_daemons_log(agent, server):
    log = agent.log()
    assert "change_password.online" in log  # the log really was written
    for secret in ("First-Passw0rd", "Second-Passw0rd", "Third-Passw0rd", "$6$"):
        assert secret not in log, f"{secret[:6]}... found in the daemon's log"
