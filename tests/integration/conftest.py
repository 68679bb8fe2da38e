from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters.host_facts import read_host_facts
from agent.adapters.libvirt_hypervisor import LibvirtHypervisor
from agent.adapters.qemu_img import QemuImgDisks
from agent.model.host import VirtType, decide_virt_type
from tests.conftest import IMAGES_DIR
from tests.support.netns import TestNet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def virt_type() -> VirtType:
    return decide_virt_type("auto", read_host_facts()).virt_type


@pytest.fixture
def hypervisor() -> Iterator[LibvirtHypervisor]:
    hv = LibvirtHypervisor("qemu:///system")
    yield hv
    hv.close()


@pytest.fixture
def created(hypervisor: LibvirtHypervisor) -> Iterator[list[uuid.UUID]]:
    """Domains a test appends here are destroyed and undefined after it, pass or fail."""
    uuids: list[uuid.UUID] = []
    yield uuids
    for u in uuids:
        if u in hypervisor.domain_uuids():
            hypervisor.destroy(u)
            hypervisor.undefine(u)


@pytest.fixture
def testnet() -> Iterator[TestNet]:
    """Test bridges, veths and namespaces (tests/support/netns.py), removed afterwards."""
    t = TestNet()
    yield t
    t.cleanup()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The busybox test image cached as a base (as the daemon caches an image's), for
    the injection tests that make fresh overlays of it."""
    cached = tmp_path / "base.qcow2"
    QemuImgDisks().cache_base(IMAGES_DIR / "busybox-test" / "disk.qcow2", cached)
    return cached
