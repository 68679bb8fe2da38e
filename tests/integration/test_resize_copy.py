"""qemu-img copy for resize: same backing file, only the guest's own clusters, grown to
the new size, the data intact, atomic."""

from __future__ import annotations

import json
import subprocess

import pytest

from agent.adapters.qemu_img import QemuImgDisks
from agent.errors import DiskError


def info(path) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)],
                                     capture_output=True, text=True, check=True).stdout)


def test_copy_resized_keeps_the_backing_file_and_the_data(guest_dir):
    disks = QemuImgDisks()
    base = guest_dir / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    disk = guest_dir / "disk.qcow2"
    disks.create_overlay(base, "qcow2", disk, size_gib=1)
    subprocess.run(["qemu-io", "-c", "write -P 0xab 1M 64k", str(disk)], check=True,
                   capture_output=True)
    new = guest_dir / "disk.resized.qcow2"
    disks.copy_resized(disk, new, size_gib=2)
    assert disks.virtual_size(new) == 2 * 1024**3
    assert info(new)["backing-filename"] == str(base)
    read = subprocess.run(["qemu-io", "-c", "read -P 0xab 1M 64k", str(new)],
                          capture_output=True, text=True, check=False)
    assert read.returncode == 0 and "Pattern verification failed" not in read.stdout
    assert not list(guest_dir.glob("*.tmp"))
    disks.copy_resized(disk, guest_dir / "same.qcow2", size_gib=0)  # 0: the size it has
    assert disks.virtual_size(guest_dir / "same.qcow2") == 1024**3


def test_copy_resized_of_a_missing_disk_is_a_clear_error(guest_dir):
    with pytest.raises(DiskError, match="qemu-img"):
        QemuImgDisks().copy_resized(guest_dir / "absent.qcow2", guest_dir / "d.qcow2", 2)
    assert not (guest_dir / "d.qcow2").exists()
