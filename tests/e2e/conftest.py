"""End-to-end fixtures: real guests from the test image, under libvirt, cleaned up after."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.adapters.host_facts import read_host_facts
from agent.adapters.image_catalog import ManifestImageCatalog
from agent.adapters.libvirt_hypervisor import LibvirtHypervisor
from agent.adapters.qemu_img import QemuImgDisks
from agent.core.guest_layout import InstanceFiles, build_domain_spec
from agent.errors import DomainNotFound
from agent.model.domain import PowerState
from agent.model.flavor import Flavor
from agent.model.host import decide_virt_type
from agent.model.image import Image
from tests.conftest import IMAGES_DIR
from tests.support.daemon import Daemon, destroy_domains

pytestmark = pytest.mark.e2e

TEST_IMAGE = IMAGES_DIR / "busybox-test" / "manifest.json"
IMAGE_ID = "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"  # fixed by vm-images/build.py
TINY = Flavor(id="1", name="m1.tiny", vcpus=1, ram=256, disk=1)


@dataclass
class Guest:
    uuid: uuid.UUID
    files: InstanceFiles
    image: Image
    login: dict[str, str]


def image_login() -> dict[str, str]:
    return json.loads(TEST_IMAGE.read_text())["test_login"]


def wait_power_state(hv: LibvirtHypervisor, u: uuid.UUID, want: PowerState, timeout: float) -> float:
    """Poll libvirt until the domain reaches `want`; seconds waited. Bounded."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if hv.power_state(u) is want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"domain {u} not {want.name} after {timeout}s: {hv.power_state(u).name}")


@pytest.fixture
def hypervisor() -> Iterator[LibvirtHypervisor]:
    hv = LibvirtHypervisor("qemu:///system")
    yield hv
    hv.close()


@pytest.fixture
def boot_guest(hypervisor: LibvirtHypervisor, guest_dir: Path) -> Iterator[Callable[[], Guest]]:
    """Boot the test image through the adapters (overlay disk, domain XML, start).
    Every guest booted is destroyed and undefined afterwards, pass or fail."""
    booted: list[uuid.UUID] = []
    virt_type = decide_virt_type("auto", read_host_facts()).virt_type

    def boot() -> Guest:
        # Boot files from a cache QEMU can read, as the daemon does it.
        image = ManifestImageCatalog(IMAGES_DIR, boot_cache=guest_dir / "boot").get(IMAGE_ID)
        u = uuid.uuid4()
        files = InstanceFiles(guest_dir, u)
        files.dir.mkdir(mode=0o755)
        # libvirt takes ownership of backing files: never back a guest by the build folder.
        base = guest_dir / f"base-{image.uuid}.qcow2"
        QemuImgDisks().cache_base(image.disk_file, base)
        QemuImgDisks().create_overlay(base, image.disk_format, files.disk, TINY.disk)
        hypervisor.define(build_domain_spec(u, image, TINY, files, virt_type,
                                            metadata={"test": "e2e"}))
        booted.append(u)
        hypervisor.start(u)
        return Guest(uuid=u, files=files, image=image, login=image_login())

    yield boot
    for u in booted:
        with contextlib.suppress(DomainNotFound):
            hypervisor.destroy(u)
        hypervisor.undefine(u)


@pytest.fixture
def daemon(guest_dir: Path) -> Iterator[Daemon]:
    """A running daemon with its own state dir; stopped, and every domain it made removed,
    after the test."""
    d = Daemon(guest_dir / "state")
    d.start()
    yield d
    d.kill()
    destroy_domains(d.state_dir)
