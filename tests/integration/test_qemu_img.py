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
