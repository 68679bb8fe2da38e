"""Power actions on a real guest, checked from inside it: reboots reset its uptime (also a
soft reboot the guest ignores, by the hard fallback), stop/start, suspend keeps its memory
across resume; and 10 soft and hard reboots in a row show no SHUTOFF event.

Some actions go through the real OpenStack clients (python-novaclient, openstacksdk), so
the bodies they send are proven too, and a refused action is each client's own 409.
One daemon and one guest serve the whole module (each test leaves the guest ACTIVE): a
build costs ~25 s under TCG, most of it the libguestfs appliance."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from novaclient import exceptions as nova_exc
from openstack import exceptions as sdk_exc

from tests.e2e.test_openstack_clients import Recorded, nova, sdk
from tests.support.acting import ServerUnderTest, module_daemon, reboot_resets_uptime, virsh
from tests.support.daemon import Daemon

SOFT_REBOOT_TIMEOUT_S = 12  # short, so that the hard fallback is seen in a test

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'service_type' parameter is unnecesary"),
]


@pytest.fixture(scope="module")
def agent() -> Iterator[Daemon]:
    with module_daemon(f"soft_reboot_timeout_s = {SOFT_REBOOT_TIMEOUT_S}\n") as daemon:
        yield daemon


@pytest.fixture(scope="module")
def server(agent: Daemon) -> ServerUnderTest:
    return ServerUnderTest.create(agent)


@pytest.fixture(scope="module")
def recorded(agent: Daemon) -> Iterator[Recorded]:
    rec = Recorded(agent, "alice")
    yield rec
    rec.assert_only_daemon(agent)  # every client request went to the daemon only


def test_soft_reboot_resets_the_guests_uptime(server, recorded):
    reboot_resets_uptime(server, "SOFT",
                         lambda: sdk(recorded).compute.reboot_server(server.id, "SOFT"))
    assert "reboot.soft_timeout" not in server.daemon.log()


def test_hard_reboot_resets_the_guests_uptime(server, recorded):
    reboot_resets_uptime(server, "HARD",
                         lambda: nova(recorded).servers.reboot(server.id, reboot_type="HARD"))


def test_a_soft_reboot_the_guest_ignores_becomes_hard_after_the_timeout(server):
    with server.shell() as con:
        rc, out = con.run("killall acpid")  # the power button now does nothing
        assert rc == 0, out
    asked = time.monotonic()
    server.act({"reboot": {"type": "SOFT"}})
    seen = server.wait("ACTIVE", timeout=SOFT_REBOOT_TIMEOUT_S + 120)
    assert "REBOOT" in [s for s, _ in seen["_seen"]]
    assert time.monotonic() - asked >= SOFT_REBOOT_TIMEOUT_S
    assert "reboot.soft_timeout" in server.daemon.log()
    with server.shell() as con:
        assert server.uptime(con) < time.monotonic() - asked
        rc, _ = con.run("pidof acpid")  # a fresh boot: acpid runs again
        assert rc == 0


def test_stop_then_start(server, recorded):
    nc, conn = nova(recorded), sdk(recorded)
    with pytest.raises(nova_exc.Conflict, match="ACTIVE"):
        nc.servers.start(server.id)
    with pytest.raises(sdk_exc.ConflictException):
        conn.compute.confirm_server_resize(server.id)
    conn.compute.stop_server(server.id)
    stopped = server.wait("SHUTOFF")
    assert stopped["OS-EXT-STS:power_state"] == 4
    assert virsh("domstate", server.id).strip() == "shut off"
    nc.servers.start(server.id)
    assert server.wait("ACTIVE")["OS-EXT-STS:power_state"] == 1
    with server.shell() as con:
        rc, _ = con.run("true")
        assert rc == 0


def test_suspend_keeps_the_guests_memory_across_resume(server, recorded):
    marker = f"kept-{time.time_ns()}"
    with server.shell() as con:
        rc, _ = con.run(f"echo {marker} > /tmp/marker")  # /tmp is a tmpfs: in RAM only
        assert rc == 0
        before = server.uptime(con)
    sdk(recorded).compute.suspend_server(server.id)
    assert server.wait("SUSPENDED")["OS-EXT-STS:vm_state"] == "suspended"
    info = virsh("dominfo", server.id)
    assert "shut off" in info and "Managed save:   yes" in info  # vCPUs and memory freed
    nova(recorded).servers.resume(server.id)
    server.wait("ACTIVE")
    with server.shell(booted=False) as con:  # it goes on where it was: no boot marker
        rc, out = con.run("cat /tmp/marker")
        assert (rc, out.strip()) == (0, marker)
        assert server.uptime(con) >= before  # no reboot happened
    assert "Managed save:   no" in virsh("dominfo", server.id)


def test_ten_soft_and_hard_reboots_show_no_shutoff_event(server):
    since = server.last_seq()
    for i in range(10):
        server.act({"reboot": {"type": "HARD" if i % 2 else "SOFT"}})
        server.wait("ACTIVE")
    statuses = server.statuses_since(since)
    assert "SHUTOFF" not in statuses, statuses
    assert statuses == ["REBOOT", "ACTIVE", "HARD_REBOOT", "ACTIVE"] * 5
    with server.daemon.client() as api:  # nor in a changes-since listing
        listed = api.get("/servers/detail", params={"changes-since": "2000-01-01T00:00:00Z"})
    assert [s["status"] for s in listed.json()["servers"]] == ["ACTIVE"]
    with server.shell() as con:  # and the guest is fine after all that
        rc, _ = con.run("true")
        assert rc == 0
