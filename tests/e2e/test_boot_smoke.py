"""Smoke test of the whole host stack: the test image boots through the libvirt adapter,
root logs in on the serial console, and a `poweroff` typed inside the guest is seen by
libvirt as the domain shutting off."""

from __future__ import annotations

from agent.model.domain import PowerState
from tests.e2e.conftest import wait_power_state
from tests.support.console import SerialConsole


def test_guest_boots_accepts_root_login_and_powers_off_from_inside(boot_guest, hypervisor):
    guest = boot_guest()
    assert hypervisor.power_state(guest.uuid) is PowerState.RUNNING
    with SerialConsole(guest.files.console_socket, guest.files.console_log) as console:
        console.wait_for(r"CA-GUEST booted", timeout=180)
        console.login(guest.login["user"], guest.login["password"])
        rc, out = console.run("id -u; cat /proc/sys/kernel/random/boot_id >/dev/null; uname -r")
        assert rc == 0
        assert out.splitlines()[0].strip() == "0"
        rc, out = console.run("mount | grep ' / '")
        assert "/dev/vda" in out and "ext4" in out
        console.run("poweroff")
    wait_power_state(hypervisor, guest.uuid, PowerState.SHUTDOWN, timeout=60)
