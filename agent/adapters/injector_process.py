"""The DiskInjector port for the daemon: its libguestfs work is done by a worker process
(agent.adapters.injector_worker), so that the daemon never loads libguestfs and a crash or
hang of that C library on an untrusted disk costs a worker, not the daemon.

The worker is started on the first need (a batch, or the warm-up at start) and lives
while it has work or a warm appliance: it exits by itself once its warm appliance was
released for idleness, and the next need starts another. One request at a time (the
batcher sends one batch at a time). A worker that dies during a batch fails each of its
requests with an InjectionError (the create job's error handling takes it from there);
one that exited idle just as a request was sent never started it, so that request is sent
again to a new worker. A request not answered within REQUEST_TIMEOUT_S kills the worker.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from agent.adapters.guestfs_appliance import kill_stale_appliances
from agent.adapters.injector_frames import (
    FrameError,
    encode_frame,
    read_frame,
    request_to_wire,
    result_from_wire,
)
from agent.errors import InjectionError
from agent.model.injection import InjectionRequest, InjectionResult

log = structlog.get_logger("agent.injection.worker")
WORKER_MODULE = "agent.adapters.injector_worker"
# A batch of 8 disks takes a minute or two under TCG; a worker silent for this long is stuck.
REQUEST_TIMEOUT_S = 30 * 60.0
CLOSE_WAIT_S = 30.0  # closing an appliance: a second or so
IDLE_EXIT = 0  # the worker's code when it exits by itself (idle) or on close


@dataclass(frozen=True)
class WorkerSettings:
    virt_type: str
    spares_dir: str
    spares_per_base: int
    idle_s: float
    log_level: str = "info"
    log_format: str = "auto"


class WorkerExited(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"injection worker exited (code {code})")
        self.code = code


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, command: list[str], settings: WorkerSettings) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     close_fds=True)
        self.stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        # Its settings are its first frame, not arguments: a command line naming the
        # instances folder would look like an appliance to whoever scans for those.
        with contextlib.suppress(OSError):  # gone at once: the first request tells
            self.stdin.write(encode_frame(asdict(settings)))
            self.stdin.flush()
        self.launches = 0
        self.warm_hits = 0
        threading.Thread(target=self._reap, name="injection-worker-reaper", daemon=True).start()

    def _reap(self) -> None:
        # Only waits (no zombie) and logs: its pipes stay open, an answer may be unread.
        code = self.proc.wait()
        if code == IDLE_EXIT:
            log.info("injection.worker_exited", pid=self.proc.pid, exit_code=code)
        else:
            log.warning("injection.worker_exited", pid=self.proc.pid, exit_code=code)

    def ask(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        data = encode_frame(message)  # too big: FrameError, and the worker is left alone
        killer = threading.Timer(timeout_s, self.kill)
        killer.daemon = True
        killer.start()
        try:
            self.stdin.write(data)
            self.stdin.flush()
            answer = read_frame(self.stdout.read)
        except (OSError, ValueError, FrameError):
            answer = None  # a closed pipe or a broken frame: the worker is gone or going
        finally:
            killer.cancel()
        if answer is None:
            self.kill_if_running()
            raise WorkerExited(self.proc.wait())
        self.launches = int(answer.get("launches", self.launches))
        self.warm_hits = int(answer.get("warm_hits", self.warm_hits))
        return answer

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def kill_if_running(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)  # it may be exiting: its code tells how
        if self.proc.poll() is None:
            self.kill()


class InjectorProcess:
    """Same surface as WarmGuestfsInjector (the daemon's DiskInjector), through a worker."""

    def __init__(self, settings: WorkerSettings, command: list[str] | None = None,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.settings = settings
        self.spares_per_base = settings.spares_per_base
        # -P: `-m` would otherwise put the working directory first on sys.path, and a root
        # worker must not import an `agent` package someone left in whatever folder that is.
        self.command = command or [sys.executable, "-P", "-m", WORKER_MODULE]
        self.request_timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._ended = (0, 0)  # launches, warm hits of the workers that ended
        self._closed = False
        # Workers are started from this one thread, alive as long as we are: the worker's
        # PR_SET_PDEATHSIG fires when the *thread* that started it ends, not the daemon,
        # and a batch's or a warm-up's thread may end while its worker should live on.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="injection-worker-start")

    @property
    def launches(self) -> int:
        return self._ended[0] + (self._worker.launches if self._worker else 0)

    @property
    def warm_hits(self) -> int:
        return self._ended[1] + (self._worker.warm_hits if self._worker else 0)

    @property
    def worker_pid(self) -> int | None:
        """The running worker's pid (tests and the bench)."""
        worker = self._worker
        return worker.proc.pid if worker is not None and worker.proc.poll() is None else None

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        message = {"op": "inject", "requests": [request_to_wire(r) for r in requests]}
        try:
            with self._lock:
                answer = self._ask(message)
        except (WorkerExited, FrameError) as e:
            return [InjectionError(str(e)) for _ in requests]
        if "failed" in answer or len(answer.get("results", ())) != len(requests):
            reason = str(answer.get("failed", "injection worker answered wrongly"))[:200]
            return [InjectionError(reason) for _ in requests]
        return [result_from_wire(r) for r in answer["results"]]

    def warm_up_for(self, bases: dict[Path, str], make: dict[Path, Path] | None = None) -> None:
        """Warm the worker's appliance for these bases (path -> format), after making each
        base of `make` (base -> its source image) in the warm-up. Returns at once: a
        thread starts the worker and asks; a batch arriving meanwhile waits for it."""
        message = {"op": "warm_up", "bases": {str(b): f for b, f in bases.items()},
                   "make": [[str(s), str(b)] for b, s in (make or {}).items()]}
        threading.Thread(target=self._warm_up, args=(message,), name="injection-warm-up",
                         daemon=True).start()

    def _warm_up(self, message: dict[str, Any]) -> None:
        try:
            with self._lock:
                self._ask(message)
        except WorkerExited as e:
            log.warning("injection.warm_up_failed", error=str(e))

    def close(self) -> None:
        """Ask the worker to close (its appliance, its spares), then kill it if it has not
        gone within CLOSE_WAIT_S. A batch still running is not waited for past that."""
        got = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            self._closed = True
            worker, self._worker = self._worker, None
            if worker is None:
                return
            if got and worker.proc.poll() is None:
                with contextlib.suppress(WorkerExited):
                    worker.ask({"op": "close"}, CLOSE_WAIT_S)
            else:
                worker.proc.terminate()  # its SIGTERM handler closes the appliance
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(CLOSE_WAIT_S)
            worker.kill()
            with contextlib.suppress(OSError):
                worker.proc.wait(CLOSE_WAIT_S)
        finally:
            if got:
                self._lock.release()
            self._spawner.shutdown(wait=False)
        self._kill_orphaned_appliances()  # a killed worker's

    # -- under the lock -------------------------------------------------------------------
    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """One exchange; sent again once to a new worker when the worker had exited idle
        (it exits only between requests, so it never started this one)."""
        if self._closed:
            raise WorkerExited(None)
        for attempt in range(2):
            worker = self._running_worker()
            try:
                return worker.ask(message, self.request_timeout_s)
            except WorkerExited as e:
                self._end(worker)
                if e.code != IDLE_EXIT or attempt:
                    raise
        raise AssertionError("unreachable")

    def _running_worker(self) -> _Worker:
        worker = self._worker
        if worker is not None and worker.proc.poll() is not None:
            self._end(worker)
            worker = None
        if worker is None:
            worker = self._worker = self._spawner.submit(_Worker, self.command,
                                                         self.settings).result()
        return worker

    def _end(self, worker: _Worker) -> None:
        if self._worker is worker:
            self._ended = (self._ended[0] + worker.launches, self._ended[1] + worker.warm_hits)
            self._worker = None
        if worker.proc.returncode != IDLE_EXIT:
            self._kill_orphaned_appliances()

    def _kill_orphaned_appliances(self) -> None:
        """The QEMU of a worker that died (crashed, killed) outlives it, holding a disk
        and ~1 GiB: killed before another worker starts (no other appliance is ours then)."""
        killed = kill_stale_appliances(Path(self.settings.spares_dir).parent)
        if killed:
            log.warning("injection.orphaned_appliances_killed", pids=killed)
