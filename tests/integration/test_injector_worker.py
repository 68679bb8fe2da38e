"""The injection worker on real disks, driven as the daemon drives it (InjectorProcess):
a file injected through the worker is on the disk afterwards and the next fresh disk of
that base is done on the worker's warm spare; closing leaves no worker, appliance or
spare behind; a worker whose warm appliance was released for idleness exits by itself
and a later injection starts another; a worker killed during its warm-up leaves the next
injection working (and its appliance is not left running)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from agent.adapters.injector_process import InjectorProcess, WorkerSettings
from agent.model.injection import InjectionResult
from tests.integration.test_guestfs_warm import BASE, fresh, motd, request
from tests.support.daemon import processes_naming

WAIT_S = 300.0  # a launch takes 10-60 s under TCG on a busy box: generous bounds


def worker_injector(tmp_path: Path, virt_type, idle_s: float = 3600.0) -> InjectorProcess:
    return InjectorProcess(WorkerSettings(
        virt_type=virt_type.value, spares_dir=str(tmp_path / "instances" / "_spares"),
        spares_per_base=1, idle_s=idle_s))


@pytest.fixture
def spares(tmp_path: Path) -> Path:
    return tmp_path / "instances" / "_spares"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def wait_until(what: str, check) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def assert_injected_by_a_new_worker(proc: InjectorProcess, old_pid: int, tmp_path: Path,
                                    base: Path, virt_type, name: str) -> None:
    """A fresh disk of `base` gets its file, injected by a worker other than `old_pid`."""
    disk = fresh(tmp_path, base, name)
    text = f"{name}\n".encode()
    (result,) = proc.inject([request(disk, base, text)])
    assert isinstance(result, InjectionResult), result
    assert proc.worker_pid not in (None, old_pid)
    assert motd(virt_type, disk) == text


def test_injection_through_the_worker_then_a_warm_spare_then_close(tmp_path, base, spares,
                                                                   virt_type):
    proc = worker_injector(tmp_path, virt_type)
    try:
        first = fresh(tmp_path, base, "first")
        (result,) = proc.inject([request(first, base, b"one\n")])
        assert isinstance(result, InjectionResult), result
        assert motd(virt_type, first) == b"one\n"
        assert (proc.launches, proc.warm_hits) == (1, 0)
        pid = proc.worker_pid
        assert pid is not None, "the worker stays: it warms an appliance after the batch"
        second = fresh(tmp_path, base, "second")
        (result,) = proc.inject([request(second, base, b"two\n")])
        assert isinstance(result, InjectionResult), result
        assert (proc.launches, proc.warm_hits) == (1, 1)
        assert motd(virt_type, second) == b"two\n"
        assert proc.worker_pid == pid
        wait_until("an appliance warmed after the second batch", lambda: processes_naming(spares))
    finally:
        proc.close()
    assert not alive(pid)
    assert processes_naming(spares) == []
    assert not spares.exists()


def test_a_worker_whose_warm_appliance_was_released_exits_and_injection_still_works(
        tmp_path, spares, virt_type):
    proc = worker_injector(tmp_path, virt_type, idle_s=2.0)
    made = tmp_path / "made-base.qcow2"
    try:
        proc.warm_up_for({made: "qcow2"}, {made: BASE})  # as the daemon does at start
        wait_until("a worker started for the warm-up", lambda: proc.worker_pid is not None)
        pid = proc.worker_pid
        assert pid is not None
        wait_until("the worker exits once its idle appliance is released",
                   lambda: not alive(pid))
        assert made.exists(), "the base was made by the warm-up"
        assert processes_naming(spares) == []
        assert_injected_by_a_new_worker(proc, pid, tmp_path, made, virt_type, "after-release")
    finally:
        proc.close()


def test_a_worker_killed_during_its_warm_up_leaves_the_next_injection_working(
        tmp_path, base, spares, virt_type):
    proc = worker_injector(tmp_path, virt_type)
    try:
        proc.warm_up_for({base: "qcow2"})
        wait_until("the warm-up's appliance starting", lambda: processes_naming(spares))
        pid = proc.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until("the killed worker reaped", lambda: not alive(pid))  # not a mid-batch death
        assert_injected_by_a_new_worker(proc, pid, tmp_path, base, virt_type, "after-kill")
    finally:
        proc.close()
    assert processes_naming(spares) == []
