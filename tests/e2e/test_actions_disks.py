"""Disk actions on a real guest, checked from inside it: rescue boots the rescue image
with the server's disk as vdb and the rescue password; unrescue is back on the server's
own disk; changePassword sets a password root logs in with (and the old one no longer);
rebuild replaces the disk (a file written before is gone, the injected files are there,
the new password works); resize shows the new vCPUs, memory and disk size, revert the
old ones, confirm drops the old disk.

Some actions go through the real OpenStack clients (python-novaclient, openstacksdk), so
the bodies they send and the answers they read are proven too. One daemon and one guest
serve the whole module, in file order (each test leaves the guest ACTIVE and records its
current root password)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest

from tests.e2e.test_openstack_clients import Recorded, nova, sdk
from tests.support.acting import ServerUnderTest, module_daemon, virsh
from tests.support.console import LoginFailed
from tests.support.daemon import Daemon

GIB_SECTORS = 1024**3 // 512

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'service_type' parameter is unnecesary"),
]


@pytest.fixture(scope="module")
def agent() -> Iterator[Daemon]:
    with module_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def server(agent: Daemon) -> ServerUnderTest:
    return ServerUnderTest.create(agent, adminPass="First-Passw0rd")


@pytest.fixture(scope="module")
def recorded(agent: Daemon) -> Iterator[Recorded]:
    rec = Recorded(agent, "alice")
    yield rec
    rec.assert_only_daemon(agent)  # every client request went to the daemon only


def disks_of(server: ServerUnderTest) -> list[str]:
    return re.findall(r"^\s*(vd\w)\s", virsh("domblklist", server.id), re.MULTILINE)


def test_rescue_boots_the_rescue_image_with_the_servers_disk_second(server, recorded):
    with server.shell() as con:
        rc, _ = con.run("echo on-the-servers-disk > /root/mine; sync")
        assert rc == 0
    _resp, body = nova(recorded).servers.rescue(server.id, password="Rescue-Passw0rd")
    assert body == {"adminPass": "Rescue-Passw0rd"}
    server.wait("RESCUE")
    assert disks_of(server) == ["vda", "vdb"]
    with server.shell("Rescue-Passw0rd") as con:
        rc, out = con.run("cat /proc/partitions")
        assert re.search(r"\bvdb\b", out), out
        rc, out = con.run("test -e /root/mine; echo $?")  # the rescue system's own root
        assert out.strip() == "1"
        rc, out = con.run("mkdir -p /mnt/s && mount /dev/vdb /mnt/s && cat /mnt/s/root/mine;"
                          " umount /mnt/s")
        assert "on-the-servers-disk" in out, out
    sdk(recorded).compute.unrescue_server(server.id)
    server.wait("ACTIVE")
    assert disks_of(server) == ["vda"]
    assert not (server.dir / "disk.rescue.qcow2").exists()
    with server.shell() as con:  # the server's own password, on its own disk
        rc, out = con.run("cat /root/mine; cat /proc/partitions")
        assert "on-the-servers-disk" in out and not re.search(r"\bvdb\b", out), out


def test_change_password_sets_a_password_root_logs_in_with(server, recorded):
    sdk(recorded).compute.change_server_password(server.id, "Second-Passw0rd")
    seen = server.wait("ACTIVE")
    assert "PASSWORD" in [s for s, _ in seen["_seen"]]
    with server.shell("Second-Passw0rd") as con:
        rc, out = con.run("id -u")
        assert (rc, out.strip()) == (0, "0")
    with pytest.raises(LoginFailed), server.shell("First-Passw0rd"):
        pass
    server.password = "Second-Passw0rd"


def test_rebuild_replaces_the_disk_with_new_files_and_password(server):
    with server.shell() as con:
        rc, _ = con.run("echo before-rebuild > /root/old-data; sync")
        assert rc == 0
    r = server.act({"rebuild": {
        "imageRef": "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11", "name": "rebuilt",
        "adminPass": "Third-Passw0rd", "metadata": {"rebuilt": "yes"},
        "personality": [{"path": "/etc/rebuilt.txt",
                         "contents": base64.b64encode(b"fresh from rebuild\n").decode()}]}})
    shown = r.json()["server"]
    assert (shown["status"], shown["name"], shown["adminPass"]) == ("REBUILD", "rebuilt",
                                                                    "Third-Passw0rd")
    server.password = "Third-Passw0rd"
    assert server.wait("ACTIVE")["metadata"] == {"rebuilt": "yes"}
    with server.shell() as con:
        rc, out = con.run("cat /etc/rebuilt.txt")
        assert (rc, out) == (0, "fresh from rebuild\n")
        rc, out = con.run("test -e /root/old-data; echo $?")
        assert out.strip() == "1"  # the old disk is gone


def test_resize_then_revert_then_resize_and_confirm(server, recorded):
    nc, conn = nova(recorded), sdk(recorded)
    conn.compute.resize_server(server.id, "3")  # 2 vCPUs, 1024 MiB, 4 GiB
    shown = server.wait("VERIFY_RESIZE")
    assert shown["flavor"]["id"] == "3"
    with server.shell() as con:
        rc, out = con.run("nproc; grep MemTotal /proc/meminfo; cat /sys/block/vda/size")
        nproc, mem, size = out.split("\n")[:3]
        assert nproc.strip() == "2"
        assert int(mem.split()[1]) > 900 * 1024
        assert int(size) == 4 * GIB_SECTORS
    assert (server.dir / "disk.resize-orig.qcow2").exists()

    nc.servers.revert_resize(server.id)
    shown = server.wait("ACTIVE")
    assert shown["flavor"]["id"] == "1"
    with server.shell() as con:
        rc, out = con.run("nproc; grep MemTotal /proc/meminfo; cat /sys/block/vda/size")
        nproc, mem, size = out.split("\n")[:3]
        assert nproc.strip() == "1" and int(mem.split()[1]) < 300 * 1024
        assert int(size) == 1 * GIB_SECTORS
        rc, out = con.run("cat /etc/rebuilt.txt")  # the same disk as before the resize
        assert out == "fresh from rebuild\n"

    nc.servers.resize(server.id, "2")  # 1 vCPU, 512 MiB, 2 GiB
    server.wait("VERIFY_RESIZE")
    conn.compute.confirm_server_resize(server.id)
    shown = server.wait("ACTIVE")
    assert shown["flavor"]["id"] == "2"
    assert not (server.dir / "disk.resize-orig.qcow2").exists()
    with server.shell() as con:
        rc, out = con.run("cat /sys/block/vda/size; cat /etc/rebuilt.txt")
        assert (rc, out) == (0, f"{2 * GIB_SECTORS}\nfresh from rebuild\n")
