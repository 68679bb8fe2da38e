"""The injector remembers where a base's root filesystem is: the next disk of that base is
mounted there straight away (no list_filesystems, ~2 s under TCG), and a remembered place
that no longer holds a root falls back to probing, so a wrong memory never fails a disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.adapters import guestfs_injector
from agent.adapters.guestfs_appliance import new_handle
from agent.adapters.guestfs_injector import GuestfsInjector
from agent.adapters.qemu_img import QemuImgDisks
from agent.model.injection import InjectedFile, InjectionRequest
from tests.conftest import IMAGES_DIR

BASE = IMAGES_DIR / "busybox-test" / "disk.qcow2"
KEY = "busybox-test-base"


@pytest.fixture
def overlays(tmp_path: Path):
    disks = QemuImgDisks()
    base = tmp_path / "base.qcow2"
    disks.cache_base(BASE, base)

    def make(name: str) -> Path:
        disk = tmp_path / f"{name}.qcow2"
        disks.create_overlay(base, "qcow2", disk, 0)
        return disk
    return make


def _record_calls(monkeypatch, method: str, what) -> list:
    """Each call of `method` on the injector's appliances, recorded as `what(*args)`."""
    calls: list = []

    def counting_handle(virt_type):
        g = new_handle(virt_type)
        real = getattr(g, method)

        def counted(*args):
            calls.append(what(*args))
            return real(*args)
        setattr(g, method, counted)
        return g
    monkeypatch.setattr(guestfs_injector, "new_handle", counting_handle)
    return calls


@pytest.fixture
def listings(monkeypatch) -> list[int]:
    """Counts list_filesystems calls made by the injector's appliances."""
    return _record_calls(monkeypatch, "list_filesystems", lambda: 1)


def read_back(virt_type, disk: Path, path: str) -> bytes:
    g = new_handle(virt_type)
    try:
        g.add_drive_opts(str(disk), format="qcow2", readonly=True)
        g.launch()
        g.mount_ro(next(iter(g.list_filesystems())), "/")  # the test image: one filesystem
        return g.read_file(path)
    finally:
        g.close()


def request(disk: Path, text: bytes, fresh_of: Path | None = None) -> InjectionRequest:
    return InjectionRequest(disk=disk, layout_key=KEY, fresh_overlay_of=fresh_of,
                            files=(InjectedFile(path="/etc/motd", contents=text),))


@pytest.fixture
def ro_mounts(monkeypatch) -> list[str]:
    """The filesystems the injector's appliances mounted read-only (its root probes)."""
    return _record_calls(monkeypatch, "mount_ro", lambda fs, where: fs)


def test_a_second_disk_of_a_base_is_injected_without_listing_filesystems(
        overlays, listings, virt_type):
    injector = GuestfsInjector(virt_type)
    first, second = overlays("first"), overlays("second")
    assert not isinstance(injector.inject([request(first, b"one\n")])[0], Exception)
    assert KEY in injector.root_places and len(listings) == 1

    result = injector.inject([request(second, b"two\n")])[0]
    assert not isinstance(result, Exception), result
    assert len(listings) == 1  # the remembered place was used
    assert read_back(virt_type, second, "/etc/motd") == b"two\n"


def test_a_remembered_place_without_a_root_falls_back_to_probing(overlays, listings, virt_type):
    injector = GuestfsInjector(virt_type)
    injector.root_places[KEY] = "7"  # no partition 7 on this disk
    disk = overlays("wrong")
    result = injector.inject([request(disk, b"probed\n")])[0]
    assert not isinstance(result, Exception), result
    assert len(listings) == 1
    assert injector.root_places[KEY] != "7"
    assert read_back(virt_type, disk, "/etc/motd") == b"probed\n"


def test_a_fresh_overlay_of_a_base_is_mounted_at_its_known_place_without_a_read_only_probe(
        overlays, ro_mounts, virt_type, tmp_path):
    injector = GuestfsInjector(virt_type)
    base = tmp_path / "base.qcow2"
    assert not isinstance(injector.inject([request(overlays("first"), b"one\n", base)])[0],
                          Exception)
    probes = len(ro_mounts)
    assert probes >= 1  # the first disk of the base was probed

    second = overlays("second")
    result = injector.inject([request(second, b"two\n", base)])[0]
    assert not isinstance(result, Exception), result
    assert len(ro_mounts) == probes
    assert read_back(virt_type, second, "/etc/motd") == b"two\n"


def test_a_fresh_overlay_whose_known_place_is_wrong_is_probed_and_injected(
        overlays, ro_mounts, virt_type, tmp_path):
    injector = GuestfsInjector(virt_type)
    injector.root_places[KEY] = "7"  # no partition 7 on this disk
    disk = overlays("wrong")
    result = injector.inject([request(disk, b"probed\n", tmp_path / "base.qcow2")])[0]
    assert not isinstance(result, Exception), result
    assert len(ro_mounts) >= 1 and injector.root_places[KEY] != "7"
    assert read_back(virt_type, disk, "/etc/motd") == b"probed\n"
