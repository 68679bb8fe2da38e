"""The warm appliance on real disks: after a base's first injection, the next fresh disk of
that base is done on a spare the warm appliance already holds (no launch of its own), the
spare takes the disk's place at the disk's size, other disks still go through a launch,
closing the injector leaves no appliance process and no spare behind, a spare whose root
the warm-up mounted ahead is unmounted for a disk before it, and an appliance no build
took within idle_s is shut down (its QEMU gone) while injections still work."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.adapters import guestfs_warm
from agent.adapters.guestfs_appliance import new_handle
from agent.adapters.guestfs_injector import GuestfsInjector
from agent.adapters.guestfs_warm import WarmGuestfsInjector
from agent.adapters.qemu_img import QemuImgDisks
from agent.model.injection import InjectedFile, InjectionRequest
from tests.conftest import IMAGES_DIR
from tests.support.daemon import processes_naming

BASE = IMAGES_DIR / "busybox-test" / "disk.qcow2"
DISKS = QemuImgDisks()


@pytest.fixture
def warm(tmp_path: Path, virt_type):
    injector = WarmGuestfsInjector(GuestfsInjector(virt_type), tmp_path / "instances" / "_spares")
    yield injector
    injector.close()


def fresh(tmp_path: Path, base: Path, name: str, size_gib: int = 0) -> Path:
    disk = tmp_path / "instances" / name / "disk"
    DISKS.create_overlay(base, "qcow2", disk, size_gib)
    return disk


def request(disk: Path, base: Path | None, text: bytes) -> InjectionRequest:
    return InjectionRequest(disk=disk, fresh_overlay_of=base, layout_key=str(base),
                            files=(InjectedFile(path="/etc/motd", contents=text),))


def motd(virt_type, disk: Path) -> bytes:
    g = new_handle(virt_type)
    try:
        g.add_drive_opts(str(disk), format="qcow2", readonly=True)
        g.launch()
        g.mount_ro(next(iter(g.list_filesystems())), "/")  # the test image: one filesystem
        return g.read_file("/etc/motd")
    finally:
        g.close()


def test_the_second_disk_of_a_base_is_done_on_a_warm_spare(tmp_path, base, warm, virt_type):
    """...and closing the injector kills the warm appliance made after it and its spares."""
    first = fresh(tmp_path, base, "first")
    assert not isinstance(warm.inject([request(first, base, b"one\n")])[0], Exception)
    assert (warm.launches, warm.warm_hits) == (1, 0)

    second = fresh(tmp_path, base, "second", size_gib=2)
    result = warm.inject([request(second, base, b"two\n")])[0]
    assert not isinstance(result, Exception), result
    assert (warm.launches, warm.warm_hits) == (1, 1)  # no launch of its own
    assert result.disk == second
    assert DISKS.virtual_size(second) == 2 * 1024**3
    assert motd(virt_type, second) == b"two\n"

    assert warm._warming is not None
    warm._warming.join(120)  # the next warm appliance, made after this use
    assert processes_naming(warm.spares_dir), "a warm appliance should be running"
    warm.close()
    assert processes_naming(warm.spares_dir) == []
    assert not warm.spares_dir.exists()


def test_an_appliance_warmed_at_start_serves_the_first_disk_of_a_base(tmp_path, base, warm,
                                                                      virt_type):
    """Warmed before any injection (as the daemon does at start for its images), with the
    base made by `prepare` in the warm-up: the very first disk is done on a spare, with no
    launch of its own, and its root's place was learnt by the warm-up already."""
    made: list[Path] = []
    late_base = tmp_path / "late-base.qcow2"
    warm.warm_up_for({late_base: "qcow2"},
                     lambda: made.append(late_base) or DISKS.cache_base(BASE, late_base))
    assert warm._warming is not None
    warm._warming.join(240)
    assert made == [late_base]
    assert str(late_base) in warm.cold.root_places
    first = fresh(tmp_path, late_base, "first")
    result = warm.inject([request(first, late_base, b"one\n")])[0]
    assert not isinstance(result, Exception), result
    assert (warm.launches, warm.warm_hits) == (0, 1)
    assert motd(virt_type, first) == b"one\n"


def test_a_premounted_spare_after_another_bases_disk_in_one_batch(tmp_path, base, warm,
                                                                  virt_type):
    """The warm-up mounts the root of the last base's next spare ahead of its build; a
    batch whose first disk is of another base unmounts it first: each disk gets its own
    file (a premount left in place would take the other disk's write)."""
    other = tmp_path / "other-base.qcow2"
    DISKS.cache_base(BASE, other)
    warm.warm_up_for({other: "qcow2", base: "qcow2"})
    assert warm._warming is not None
    warm._warming.join(240)
    assert warm._warm is not None and warm._warm.mounted is not None  # base's spare
    first, second = fresh(tmp_path, other, "first"), fresh(tmp_path, base, "second")
    results = warm.inject([request(first, other, b"other\n"), request(second, base, b"base\n")])
    assert not any(isinstance(r, Exception) for r in results), results
    assert (warm.launches, warm.warm_hits) == (0, 2)
    assert (motd(virt_type, first), motd(virt_type, second)) == (b"other\n", b"base\n")


def test_a_disk_that_is_not_a_fresh_overlay_is_never_swapped(tmp_path, base, warm, virt_type):
    warm.inject([request(fresh(tmp_path, base, "first"), base, b"one\n")])
    used = fresh(tmp_path, base, "used")
    result = warm.inject([request(used, None, b"in place\n")])[0]  # e.g. changePassword
    assert not isinstance(result, Exception), result
    assert (warm.launches, warm.warm_hits) == (2, 0)
    assert motd(virt_type, used) == b"in place\n"


def test_a_warm_up_that_fails_leaves_builds_on_the_launch_path(tmp_path, base, virt_type,
                                                                 monkeypatch):
    def broken(_virt_type):
        raise RuntimeError("appliance cannot start")
    injector = WarmGuestfsInjector(GuestfsInjector(virt_type), tmp_path / "instances" / "_spares")
    monkeypatch.setattr(guestfs_warm, "new_handle", broken)  # the warm-up's launches only
    try:
        injector.inject([request(fresh(tmp_path, base, "first"), base, b"one\n")])
        second = fresh(tmp_path, base, "second")
        result = injector.inject([request(second, base, b"two\n")])[0]
        assert not isinstance(result, Exception), result
        assert (injector.launches, injector.warm_hits) == (2, 0)
        assert motd(virt_type, second) == b"two\n"
    finally:
        injector.close()


def test_an_idle_warm_appliance_is_released_and_injection_still_works(tmp_path, base, virt_type):
    """After idle_s with no build, the warm appliance's QEMU is gone and so are its spares;
    the next build launches its own appliance, and the appliance is warmed again after it."""
    injector = WarmGuestfsInjector(GuestfsInjector(virt_type), tmp_path / "instances" / "_spares",
                                   idle_s=2.0)
    try:
        injector.warm_up_for({base: "qcow2"})  # as the daemon does at start
        assert injector._warming is not None
        injector._warming.join(240)
        assert injector._warm is not None, "the warm-up should have launched an appliance"
        assert processes_naming(injector.spares_dir), "a warm appliance should be running"
        deadline = time.monotonic() + 120  # 2 s of idle, then a close: generous on a busy box
        # Released: its QEMU gone and its spares deleted (the deletion comes last).
        while (processes_naming(injector.spares_dir) or injector._warm is not None
               or list(injector.spares_dir.glob("*.qcow2"))):
            assert time.monotonic() < deadline, "the idle warm appliance was not released"
            time.sleep(0.5)

        injector.idle_s = 3600.0  # the appliance warmed after the build: held this time
        disk = fresh(tmp_path, base, "after-release")
        result = injector.inject([request(disk, base, b"after release\n")])[0]
        assert not isinstance(result, Exception), result
        assert (injector.launches, injector.warm_hits) == (1, 0)  # a launch of its own
        assert motd(virt_type, disk) == b"after release\n"
        assert injector._warming is not None
        injector._warming.join(240)
        assert processes_naming(injector.spares_dir), "warm again after the build"
    finally:
        injector.close()
    assert processes_naming(injector.spares_dir) == []
