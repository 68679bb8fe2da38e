"""Appliances left by a killed agent are found by their command line and killed; libvirt
domains (`-name guest=...`) and other agents' appliances are left alone."""

from __future__ import annotations

import subprocess
import sys

from agent.adapters.guestfs_appliance import kill_stale_appliances


def fake_qemu(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["qemu-system-x86_64", "-c", "import time; time.sleep(60)", *args],
                            executable=sys.executable)


def test_only_our_stale_appliances_are_killed(tmp_path):
    ours = tmp_path / "instances"
    stale = fake_qemu(f"file={ours}/a/disk.qcow2", "/var/tmp/.guestfs-0/appliance.d/kernel")
    domain = fake_qemu("-name", "guest=instance-x", f"file={ours}/b/disk.qcow2", "guestfs")
    other = fake_qemu(f"file={tmp_path}/elsewhere/instances/c/disk.qcow2", "guestfs")
    try:
        killed = kill_stale_appliances(ours)
        assert killed == [stale.pid]
        assert stale.wait(10) == -9
        assert domain.poll() is None and other.poll() is None
    finally:
        for p in (stale, domain, other):
            p.kill()
            p.wait(10)
