"""`compute-agent doctor` on this host: every check passes and the virt type comes with its reason."""

from __future__ import annotations

import subprocess
import sys

from agent.adapters.host_facts import read_host_facts
from agent.model.host import decide_virt_type
from tests.conftest import IMAGES_DIR


def run_doctor(*args: str, guestfs: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agent", "--image-dir", str(IMAGES_DIR), *args, "doctor"]
    return subprocess.run(cmd + ([] if guestfs else ["--no-guestfs"]), capture_output=True,
                          text=True, timeout=300, check=False)


def test_doctor_passes_and_states_the_virt_decision_with_its_reason():
    done = run_doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    expected = decide_virt_type("auto", read_host_facts())
    assert f"virt type: {expected.virt_type.value}: {expected.reason}" in done.stdout
    assert "[ok  ] libguestfs: appliance launched in" in done.stdout
    assert "[ok  ] nftables: usable (anti-spoofing rules)" in done.stdout
    assert done.stdout.strip().endswith("host can provision servers")


def test_doctor_fails_with_a_fix_when_libvirt_is_unreachable(tmp_path):
    done = run_doctor("--libvirt-uri", f"qemu+unix:///system?socket={tmp_path}/none.sock",
                      "--virt-type", "qemu", guestfs=False)
    assert done.returncode == 1
    assert "[FAIL] libvirt:" in done.stdout
    assert "fix: start libvirtd" in done.stdout
    assert "CANNOT provision" in done.stdout
