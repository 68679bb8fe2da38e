"""The warm appliance is released when no batch took it for `idle_s` after it became
ready: its handle closed, its spares deleted, `injection.warm_released` logged. A batch
that takes it first cancels the release (a late timer never closes an appliance a batch
holds, nor the one warmed after it), a build after a release goes cold and warms the
appliance again, and closing the injector with a release pending closes it once.

With fakes of the appliance, of the cold injector and of qemu-img (no launch, no
subprocess); the real appliance's release is in tests/integration/test_guestfs_warm.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.adapters import guestfs_warm
from agent.adapters.guestfs_warm import WarmGuestfsInjector
from agent.model.injection import InjectionRequest, InjectionResult

HOUR = 3600.0  # an idle window no test waits for: its timer is fired by hand


class FakeAppliance:
    """A libguestfs handle: drives added, launched, shut down, closed."""

    def __init__(self) -> None:
        self.drives: list[str] = []
        self.closes = 0

    def add_drive_opts(self, path: str, **_: object) -> None:
        self.drives.append(path)

    def launch(self) -> None:
        pass

    def list_devices(self) -> list[str]:
        return [f"/dev/sd{chr(ord('a') + i)}" for i in range(len(self.drives))]

    def umount_all(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        self.closes += 1


class FakeCold:
    """The GuestfsInjector the warm one falls back on: counts its own launches."""

    virt_type = "qemu"
    limits = None

    def __init__(self) -> None:
        self.launches = 0

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult]:
        self.launches += 1
        return [InjectionResult(disk=r.disk) for r in requests]

    def inject_on(self, g, devices, requests, mounted=None):  # type: ignore[no-untyped-def]
        return [InjectionResult(disk=r.disk) for r in requests]

    def premount(self, g, device, layout_key) -> bool:  # type: ignore[no-untyped-def]
        return False

    def learn_root_places(self, g, devices) -> None:  # type: ignore[no-untyped-def]
        pass


class FakeDisks:
    def create_overlay(self, base: Path, fmt: str, path: Path, size_gib: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"overlay of " + str(base).encode())

    def virtual_size(self, path: Path) -> int:
        return 1024**3

    def grow(self, path: Path, size: int) -> None:
        pass


@pytest.fixture
def appliances(monkeypatch: pytest.MonkeyPatch) -> list[FakeAppliance]:
    """Every appliance the warm-ups make, in order."""
    made: list[FakeAppliance] = []

    def new_handle(_virt_type: object) -> FakeAppliance:
        made.append(FakeAppliance())
        return made[-1]

    monkeypatch.setattr(guestfs_warm, "new_handle", new_handle)
    monkeypatch.setattr(guestfs_warm, "watched", lambda g, drives, limits: g)
    monkeypatch.setattr(guestfs_warm, "kill_stale_appliances", lambda spares_dir: [])
    return made


def warm_injector(tmp_path: Path, idle_s: float) -> WarmGuestfsInjector:
    return WarmGuestfsInjector(FakeCold(), tmp_path / "instances" / "_spares",  # type: ignore[arg-type]
                               disks=FakeDisks(), idle_s=idle_s)  # type: ignore[arg-type]


def warmed(injector: WarmGuestfsInjector, base: Path) -> None:
    """Warm the appliance for `base` as the daemon does at start, and wait for it."""
    injector.warm_up_for({base: "qcow2"})
    assert injector._warming is not None
    injector._warming.join(10)
    assert injector._warm is not None, "the warm-up should have made an appliance"


def build(tmp_path: Path, base: Path, name: str) -> InjectionRequest:
    disk = tmp_path / "instances" / name / "disk"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"fresh overlay")
    return InjectionRequest(disk=disk, fresh_overlay_of=base, layout_key=str(base))


def spares(injector: WarmGuestfsInjector) -> list[Path]:
    return sorted(injector.spares_dir.glob("*.qcow2")) if injector.spares_dir.exists() else []


def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the bounded wait"
        time.sleep(0.01)


def test_an_appliance_no_batch_takes_is_released_after_idle_s(tmp_path, appliances):
    injector = warm_injector(tmp_path, idle_s=0.05)
    with capture_logs() as logs:
        warmed(injector, tmp_path / "base.qcow2")
        assert len(spares(injector)) == 2
        until(lambda: appliances[0].closes == 1)
        until(lambda: any(e["event"] == "injection.warm_released" for e in logs))
    assert injector._warm is None
    assert spares(injector) == []
    released = next(e for e in logs if e["event"] == "injection.warm_released")
    assert released["idle_s"] == 0.05
    injector.close()
    assert appliances[0].closes == 1  # closed once: close() has nothing left to close


def test_a_batch_that_takes_the_appliance_cancels_its_release(tmp_path, appliances):
    """Even a timer firing late (right after the batch took it) leaves the batch's
    appliance and the one warmed after the batch alone."""
    base = tmp_path / "base.qcow2"
    injector = warm_injector(tmp_path, idle_s=HOUR)
    warmed(injector, base)
    timer = injector._idle_timer
    assert timer is not None
    with capture_logs() as logs:
        injector.inject([build(tmp_path, base, "first")])
        assert injector.warm_hits == 1 and injector.cold.launches == 0
        assert timer.finished.is_set()  # cancelled
        assert injector._warming is not None
        injector._warming.join(10)  # warmed again after the batch
        timer.function(*timer.args)  # the old timer, had it fired anyway
    assert injector._warm is not None and appliances[1].closes == 0
    assert appliances[0].closes == 1  # by the batch, after its use
    assert len(spares(injector)) == 2
    assert not any(e["event"] == "injection.warm_released" for e in logs)
    injector.close()


def test_a_build_after_a_release_launches_its_own_and_warms_again(tmp_path, appliances):
    base = tmp_path / "base.qcow2"
    injector = warm_injector(tmp_path, idle_s=HOUR)
    warmed(injector, base)
    timer = injector._idle_timer
    assert timer is not None
    timer.cancel()
    timer.function(*timer.args)  # as if idle for an hour
    assert injector._warm is None and appliances[0].closes == 1

    result = injector.inject([build(tmp_path, base, "after-release")])[0]
    assert isinstance(result, InjectionResult)
    assert (injector.cold.launches, injector.warm_hits) == (1, 0)  # cold
    assert injector._warming is not None
    injector._warming.join(10)
    assert injector._warm is not None and len(appliances) == 2  # warm again
    assert injector._idle_timer is not None and injector._idle_timer is not timer
    injector.close()
    assert appliances[1].closes == 1


def test_closing_with_a_release_pending_closes_the_appliance_once(tmp_path, appliances):
    injector = warm_injector(tmp_path, idle_s=HOUR)
    warmed(injector, tmp_path / "base.qcow2")
    timer = injector._idle_timer
    assert timer is not None
    injector.close()
    assert appliances[0].closes == 1
    assert timer.finished.is_set()  # cancelled
    assert not injector.spares_dir.exists()
    with capture_logs() as logs:
        timer.function(*timer.args)  # had it fired during the close
    assert appliances[0].closes == 1
    assert logs == []
    assert not any(t.name == "guestfs-warm-idle" and t.is_alive() for t in threading.enumerate())


def test_on_idle_is_called_when_the_injector_comes_to_hold_nothing(tmp_path, appliances,
                                                                  monkeypatch):
    """The injection worker exits on it: after an idle release, and after a failed warm-up
    (both leave no appliance and none launching); never while an appliance is held."""
    calls: list[bool] = []
    base = tmp_path / "base.qcow2"
    injector = WarmGuestfsInjector(FakeCold(), tmp_path / "instances" / "_spares",  # type: ignore[arg-type]
                                   disks=FakeDisks(), idle_s=HOUR,  # type: ignore[arg-type]
                                   on_idle=lambda: calls.append(injector.holds_nothing()))
    warmed(injector, base)
    assert calls == [] and not injector.holds_nothing()
    timer = injector._idle_timer
    assert timer is not None
    timer.cancel()
    timer.function(*timer.args)  # as if idle for an hour
    assert calls == [True]

    def broken(_virt_type: object) -> None:
        raise RuntimeError("appliance cannot start")
    monkeypatch.setattr(guestfs_warm, "new_handle", broken)
    injector.warm_up_for({base: "qcow2"})
    until(lambda: len(calls) == 2)
    assert calls == [True, True]
    injector.close()
