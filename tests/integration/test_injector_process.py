"""The daemon's side of the injection worker (InjectorProcess) against a fake worker, a
small Python program that speaks the protocol: a worker that dies during a batch fails
each of its requests (with no secret in the error) and the next batch gets a new worker;
one that exits by itself between requests (idle) is replaced without failing anything;
one that does not answer within the bound is killed; close() ends the worker. The real
worker (libguestfs) is in tests/integration/test_injector_worker.py."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from agent.adapters.injector_process import InjectorProcess, WorkerSettings
from agent.errors import InjectionError
from agent.model.injection import InjectedFile, InjectionRequest, InjectionResult

REPO = Path(__file__).resolve().parents[2]
SECRET = b"s3cret-contents"

FAKE_WORKER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from agent.adapters.injector_frames import encode_frame, read_frame
    state = sys.argv[1]
    settings = read_frame(sys.stdin.buffer.read)
    with open(os.path.join(state, "pids"), "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    out = sys.stdout.buffer
    def answer(message):
        out.write(encode_frame(message)); out.flush()
    while True:
        message = read_frame(sys.stdin.buffer.read)
        if message is None:
            sys.exit(0)
        if message["op"] == "close":
            open(os.path.join(state, "closed"), "w").close()
            answer({{"ok": True}}); sys.exit(0)
        disks = [r["disk"] for r in message.get("requests", ())]
        if any("crash" in d for d in disks):
            os._exit(3)
        if any("hang" in d for d in disks):
            time.sleep(3600)
        answer({{"results": [{{"result": {{"disk": d, "written": ["/etc/motd"]}}}} for d in disks],
                 "launches": 1, "warm_hits": 0}})
        if settings["idle_s"] == 0:  # exits as soon as it holds nothing, as when idle
            sys.exit(0)
""")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER.format(repo=str(REPO)))
    return tmp_path


def injector(state: Path, idle_s: float = 60.0, **kwargs) -> InjectorProcess:
    settings = WorkerSettings(virt_type="qemu", spares_dir=str(state / "spares"),
                              spares_per_base=1, idle_s=idle_s)
    return InjectorProcess(settings, command=[sys.executable, str(state / "fake_worker.py"),
                                              str(state)], **kwargs)


def requests(*names: str) -> list[InjectionRequest]:
    return [InjectionRequest(disk=Path(f"/instances/{n}/disk"), root_password_hash="$6$salt$h",
                             files=(InjectedFile(path="/etc/motd", contents=SECRET),))
            for n in names]


def pids(state: Path) -> list[int]:
    path = state / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_dying_mid_batch_fails_each_request_and_the_next_batch_gets_a_new_worker(
        state: Path) -> None:
    proc = injector(state)
    try:
        failed = proc.inject(requests("a", "crash-b"))
        assert [type(r) for r in failed] == [InjectionError, InjectionError]
        assert all("injection worker exited" in str(e) for e in failed)
        assert not any(SECRET.decode() in str(e) or "$6$" in str(e) for e in failed)
        done = proc.inject(requests("c"))
        assert [r.disk for r in done if isinstance(r, InjectionResult)] == [Path("/instances/c/disk")]
        assert len(pids(state)) == 2
        assert proc.launches == 1
    finally:
        proc.close()


def test_a_worker_that_exited_idle_is_replaced_without_failing_a_request(state: Path) -> None:
    proc = injector(state, idle_s=0)
    try:
        for name in ("a", "b", "c"):
            (result,) = proc.inject(requests(name))
            assert isinstance(result, InjectionResult), result
        assert len(pids(state)) == 3
        assert proc.launches == 3  # counters of ended workers are kept
    finally:
        proc.close()


def test_a_worker_that_does_not_answer_in_time_is_killed_and_its_batch_fails(state: Path) -> None:
    proc = injector(state, request_timeout_s=1.0)
    try:
        (result,) = proc.inject(requests("hang"))
        assert isinstance(result, InjectionError)
        assert gone(pids(state)[0])  # killed and reaped before the batch's answer
        (result,) = proc.inject(requests("after"))
        assert isinstance(result, InjectionResult)
    finally:
        proc.close()


def test_close_ends_the_worker_and_later_requests_fail(state: Path) -> None:
    proc = injector(state)
    (result,) = proc.inject(requests("a"))
    assert isinstance(result, InjectionResult)
    (pid,) = pids(state)
    proc.close()
    assert (state / "closed").exists()
    assert gone(pid)
    (after,) = proc.inject(requests("b"))
    assert isinstance(after, InjectionError)
    assert len(pids(state)) == 1  # no worker started after close


def test_nothing_is_started_before_a_need(state: Path) -> None:
    proc = injector(state)
    proc.close()
    assert pids(state) == []


def test_a_batch_too_big_for_a_frame_fails_without_touching_the_worker(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.adapters import injector_frames
    proc = injector(state)
    try:
        (result,) = proc.inject(requests("a"))
        assert isinstance(result, InjectionResult)
        monkeypatch.setattr(injector_frames, "MAX_FRAME", 64)
        failed = proc.inject(requests("big-1", "big-2"))
        assert [type(r) for r in failed] == [InjectionError, InjectionError]
        assert not any(SECRET.decode() in str(e) for e in failed)
        monkeypatch.undo()
        (result,) = proc.inject(requests("b"))
        assert isinstance(result, InjectionResult)
        assert len(pids(state)) == 1  # the same worker throughout
    finally:
        proc.close()


def test_the_real_worker_never_imports_code_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker runs as root with `-m`, which would put the working directory first on
    sys.path: an `agent` package left there by anyone must not be what it imports."""
    hostile = tmp_path / "cwd" / "agent"
    hostile.mkdir(parents=True)
    marker = tmp_path / "hostile-code-ran"
    (hostile / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path / "cwd")
    proc = InjectorProcess(WorkerSettings(virt_type="qemu", spares_dir=str(tmp_path / "spares"),
                                          spares_per_base=0, idle_s=60.0))
    try:
        assert proc.inject([]) == []  # an exchange with a real worker: it started and answered
    finally:
        proc.close()
    assert not marker.exists()
