"""Shared fixtures. Tiers: tests/unit (no outside things), tests/integration (real
libvirtd, qemu-img, libguestfs), tests/e2e (real guests)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO / "vm-images" / "build"
# QEMU runs as an unprivileged user (libvirt-qemu on Debian): guest files must live where
# it can traverse, which pytest's 0700 tmp_path is not.
GUEST_SCRATCH = Path("/var/tmp/compute-agent-tests")


@pytest.fixture
def guest_dir() -> Iterator[Path]:
    """A fresh folder QEMU can reach, removed after the test."""
    GUEST_SCRATCH.mkdir(mode=0o755, exist_ok=True)
    GUEST_SCRATCH.chmod(0o755)
    d = GUEST_SCRATCH / uuid.uuid4().hex[:12]
    d.mkdir(mode=0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
