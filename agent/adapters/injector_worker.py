"""The injection worker: a short-lived process that does all of the agent's libguestfs
work, so that the daemon never loads libguestfs (~3.5 MiB of its idle RSS stayed mapped
after the warm appliance was released) and a C library handling untrusted guest disks
cannot crash or hang the daemon (which can kill the worker instead).

    python -m agent.adapters.injector_worker

It reads its settings (WorkerSettings of injector_process) as the first frame on stdin,
then serves frames (agent.adapters.injector_frames) from stdin and answers on stdout, one
request at a time: `inject`, `warm_up`, `close`. Logs go to stderr (the daemon's, hence its
journal); stdout carries frames only (fd 1 is pointed at stderr, so that nothing a library
prints can corrupt them). It exits with 0 when it holds nothing (its warm appliance was
released for idleness, a warm-up failed, or a batch left nothing to warm) and has no
request, on `close` and at the end of stdin; on SIGTERM (also sent when the daemon dies:
PR_SET_PDEATHSIG) it closes its appliance and exits with 143.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from agent.adapters.guestfs_injector import GuestfsInjector
from agent.adapters.guestfs_warm import WarmGuestfsInjector
from agent.adapters.injector_frames import (
    FrameError,
    encode_frame,
    read_frame,
    request_from_wire,
    result_to_wire,
)
from agent.adapters.qemu_img import QemuImgDisks
from agent.log import configure_logging
from agent.model.host import VirtType

log = structlog.get_logger("agent.injection.worker")
PR_SET_PDEATHSIG = 1
SIGTERM_EXIT = 128 + signal.SIGTERM


class _Terminated(Exception):
    pass


def _die_with_parent() -> None:
    """SIGTERM when the daemon dies, even SIGKILLed: the appliance must not outlive it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the daemon died before the prctl: nobody would send it
        raise _Terminated


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise _Terminated


class Worker:
    def __init__(self, injector: WarmGuestfsInjector, in_fd: int, out_fd: int, wake_fd: int) -> None:
        self.injector = injector
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.wake_fd = wake_fd

    def serve(self) -> None:
        """Until stdin ends, `close`, or nothing is held and no request waits."""
        while True:
            readable, _, _ = select.select([self.in_fd, self.wake_fd], [], [])
            if self.in_fd in readable:
                message = read_frame(lambda n: os.read(self.in_fd, n))
                if message is None or message.get("op") == "close":
                    if message is not None:
                        self._answer({"ok": True})
                    return
                self._answer(self.handle(message))
                if self.injector.holds_nothing():
                    log.debug("injection.worker_idle")
                    return
            elif self.wake_fd in readable:
                os.read(self.wake_fd, 4096)
                if self.injector.holds_nothing():  # not re-warmed by a request meanwhile
                    return

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        try:
            if op == "inject":
                requests = [request_from_wire(r) for r in message["requests"]]
                results = [result_to_wire(r) for r in self.injector.inject(requests)]
                return {"results": results, **self.counters()}
            if op == "warm_up":
                self.warm_up({Path(b): f for b, f in message["bases"].items()},
                             [(Path(s), Path(b)) for s, b in message.get("make", ())])
                return {"ok": True, **self.counters()}
        except Exception as e:  # answered, not raised: the daemon decides
            # The type only: a message (a validation error's) could quote a request's secrets.
            log.error("injection.worker_failed", op=op, error=type(e).__name__)
            return {"failed": f"injection worker failed: {type(e).__name__}"}
        return {"failed": f"unknown request {op!r}"[:100]}

    def warm_up(self, bases: dict[Path, str], make: list[tuple[Path, Path]]) -> None:
        def make_bases() -> None:  # in the warm-up's thread: the answer does not wait for it
            disks = QemuImgDisks()
            for source, base in make:
                disks.cache_base(source, base)

        self.injector.warm_up_for(bases, make_bases if make else None)

    def counters(self) -> dict[str, int]:
        return {"launches": self.injector.launches, "warm_hits": self.injector.warm_hits}

    def _answer(self, message: dict[str, Any]) -> None:
        data = encode_frame(message)
        while data:
            data = data[os.write(self.out_fd, data):]


def main() -> int:
    settings = read_frame(lambda n: os.read(0, n))
    if settings is None:  # the daemon went before it said anything
        return 0
    configure_logging(settings.get("log_level", "info"), settings.get("log_format", "auto"))
    out_fd = os.dup(1)  # frames only; whatever else writes to stdout lands on stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, _on_sigterm)
    wake_r, wake_w = os.pipe()
    injector: WarmGuestfsInjector | None = None
    try:
        _die_with_parent()
        injector = WarmGuestfsInjector(
            GuestfsInjector(VirtType(settings["virt_type"])), Path(settings["spares_dir"]),
            spares_per_base=int(settings["spares_per_base"]), idle_s=float(settings["idle_s"]),
            on_idle=lambda: os.write(wake_w, b"x"))
        Worker(injector, 0, out_fd, wake_r).serve()
    except _Terminated:
        return SIGTERM_EXIT
    except FrameError as e:
        log.error("injection.worker_bad_frame", error=str(e))
        return 2
    finally:
        if injector is not None:
            with contextlib.suppress(_Terminated):
                injector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
