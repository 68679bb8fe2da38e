"""Servers built at the same time cache the same base image at once: every one of them
gets it, whole, and no temp file is left."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from agent.adapters.qemu_img import QemuImgDisks


def test_concurrent_caches_of_one_image_all_succeed(guest_dir):
    source = guest_dir / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "64M"], check=True)
    source.write_bytes(source.read_bytes() + b"\0" * (8 << 20))  # big enough to overlap
    dest = guest_dir / "_base" / "image.qcow2"
    disks = QemuImgDisks()
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(disks.cache_base, source, dest) for _ in range(4)]:
            future.result()
    assert dest.read_bytes() == source.read_bytes()
    assert not list(dest.parent.glob("*.tmp"))
