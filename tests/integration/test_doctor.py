"""`compute-agent doctor` on this host: every check passes and the virt type comes with its reason."""

from __future__ import annotations

import subprocess
import sys

from agent.adapters.host_facts import read_host_facts
from agent.model.host import decide_virt_type
from tests.conftest import IMAGES_DIR, REPO


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


def test_a_state_dir_under_a_folder_others_cannot_traverse_is_refused_at_start_and_by_doctor(
        guest_dir):
    """QEMU and dnsmasq run unprivileged: under a 0700 folder every build would fail, so
    the daemon does not start (non-zero, with the reason) and doctor says so first."""
    locked = guest_dir / "l"
    locked.mkdir(mode=0o700)
    locked.chmod(0o700)
    state = locked / "s"
    serve = subprocess.run(
        [sys.executable, "-m", "agent", "--image-dir", str(IMAGES_DIR), "--state-dir", str(state),
         "--virt-type", "qemu", "serve", "--socket", str(guest_dir / "api.sock")],
        capture_output=True, text=True, timeout=120, check=False)
    assert serve.returncode == 2, serve.stdout + serve.stderr
    assert f"{locked} (mode 0700) is not world-traversable" in serve.stderr
    assert f"fix: chmod o+x {locked}" in serve.stderr
    assert not (guest_dir / "api.sock").exists()  # it never served

    done = run_doctor("--state-dir", str(state), "--virt-type", "qemu", guestfs=False)
    assert done.returncode == 1
    first = done.stdout.splitlines()[0]
    assert first.startswith("[FAIL] state dir:") and f"{locked} (mode 0700)" in first
    assert "CANNOT provision" in done.stdout

    locked.chmod(0o755)
    assert run_doctor("--state-dir", str(state), "--virt-type", "qemu",
                      guestfs=False).stdout.splitlines()[0].startswith("[ok  ] state dir:")


def test_the_makefile_doctor_checks_the_images_and_state_dir_the_demo_uses():
    """`make doctor` right after `make setup` looks where `make demo` will: the images
    built into vm-images/build and the demo's state dir (not /var/lib/compute-agent)."""
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ndoctor:", 1)[1].split("\n\n", 1)[0]
    assert "--image-dir vm-images/build" in recipe
    assert "--state-dir /var/tmp/compute-agent-demo/state" in recipe
    assert 'STATE = Path("/var/tmp/compute-agent-demo")' in (REPO / "scripts/demo.py").read_text()
