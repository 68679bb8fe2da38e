"""qemu-img overlays: grown to the flavor's size, atomic, clear errors."""

from __future__ import annotations

import subprocess

import pytest

from agent.adapters.qemu_img import QemuImgDisks
from agent.errors import DiskError


def test_qemu_img_overlay_grows_to_flavor_size_and_keeps_backing(guest_dir):
    disks = QemuImgDisks()
    base = guest_dir / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    disks.create_overlay(base, "qcow2", guest_dir / "disk.qcow2", size_gib=1)
    assert disks.virtual_size(guest_dir / "disk.qcow2") == 1024**3
    assert not list(guest_dir.glob("*.tmp"))
    disks.create_overlay(base, "qcow2", guest_dir / "small.qcow2", size_gib=0)
    assert disks.virtual_size(guest_dir / "small.qcow2") == 64 * 1024**2


def test_qemu_img_missing_base_is_a_clear_error(guest_dir):
    with pytest.raises(DiskError, match="qemu-img"):
        QemuImgDisks().create_overlay(guest_dir / "absent.qcow2", "qcow2", guest_dir / "d.qcow2", 1)
    assert not (guest_dir / "d.qcow2").exists()


def test_the_small_file_operations_the_workflows_use(tmp_path):
    """The record of a resize round-trips (written whole: no temp file left) and reads as
    None when missing or torn; replace renames over the target; remove_file accepts a
    missing file; the fingerprint follows size and mtime."""
    disks = QemuImgDisks()
    record = tmp_path / "resize.json"
    assert disks.read_record(record) is None
    disks.write_record(record, {"old_flavor_id": "1", "power_on": True})
    assert disks.read_record(record) == {"old_flavor_id": "1", "power_on": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resize.json"]
    record.write_text('{"old_flavor_id": ')  # torn
    assert disks.read_record(record) is None

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("new")
    b.write_text("old")
    size, _ = disks.fingerprint(a)
    assert size == 3 and disks.exists(a)
    disks.replace(a, b)
    assert not disks.exists(a) and b.read_text() == "new"
    disks.remove_file(b)
    disks.remove_file(b)  # already gone: fine
    assert not disks.exists(b)
