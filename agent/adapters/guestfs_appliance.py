"""libguestfs handles, with the backend settings this host needs.

libguestfs's direct backend asks QEMU for accel=kvm:tcg; where KVM is present but cannot
run a guest (see model.host.decide_virt_type) that hangs, so TCG is forced there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.model.host import VirtType

if TYPE_CHECKING:
    import guestfs


def new_handle(virt_type: VirtType) -> guestfs.GuestFS:
    # libguestfs (~16 MiB of libraries) loads with the first handle, not with the daemon:
    # a daemon that injects nothing (no warm appliance, no build yet) never maps it.
    import guestfs
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    # No sync of every drive at shutdown (~100 ms a drive under TCG, most of a warm
    # injection): each disk is unmounted after its injection (that flushes it to the
    # drive), and the shutdown's SIGTERM makes QEMU write its qcow2 metadata as it exits.
    g.set_autosync(False)
    if virt_type == VirtType.QEMU:
        g.set_backend_settings(["force_tcg"])
    return g


@dataclass(frozen=True)
class ApplianceLimits:
    """How long one appliance call may take before its QEMU is killed. libguestfs has no
    per-call timeout of its own (only 20 min for a launch), and a crafted filesystem can
    keep the appliance's kernel busy forever. Generous: calls take seconds under TCG."""

    launch_s: float = 600.0  # a launch on a loaded 2-CPU host under TCG
    call_s: float = 120.0


class WatchedHandle:
    """A libguestfs handle whose every call is bounded by ApplianceLimits: a watchdog
    timer kills the appliance's QEMU when a call overruns, the call then fails (so does
    every later one) with a RuntimeError naming the limit.

    The timer never calls into the handle (a handle serialises its calls): the QEMU pid is
    read after launch, and during launch the QEMU is found among our children by the disk
    paths on its command line."""

    def __init__(self, g: guestfs.GuestFS, drives: list[str], limits: ApplianceLimits) -> None:
        self._g = g
        self._drives = drives
        self._limits = limits
        self._pid: int | None = None
        self.timed_out: str | None = None  # the call that overran, once one has

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._g, name)
        return self._bounded(name, attr) if callable(attr) else attr

    def _bounded(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        limit = self._limits.launch_s if name == "launch" else self._limits.call_s

        def bounded(*args: Any, **kwargs: Any) -> Any:
            if self.timed_out is not None and name != "close":  # close always releases
                raise RuntimeError(f"appliance killed earlier: {self.timed_out}")
            timer = threading.Timer(limit, self._kill, args=(f"{name} took over {limit:.0f} s",))
            timer.daemon = True
            timer.start()
            try:
                result = call(*args, **kwargs)
            except RuntimeError as e:
                if self.timed_out is not None:
                    raise RuntimeError(f"appliance killed: {self.timed_out}") from e
                raise
            finally:
                timer.cancel()
            if name == "launch":
                self._pid = self._g.get_pid()
            return result
        return bounded

    def _kill(self, why: str) -> None:
        self.timed_out = why
        pids = [self._pid] if self._pid is not None else _appliance_children(self._drives)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def watched(g: guestfs.GuestFS, drives: list[str], limits: ApplianceLimits) -> guestfs.GuestFS:
    """`g` with every call bounded (typed as the handle: it answers the same calls)."""
    return WatchedHandle(g, drives, limits)  # type: ignore[return-value]


def _qemu_argv(proc: Path) -> list[str] | None:
    """The command line of a QEMU process, None for anything else (or gone meanwhile)."""
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None  # gone meanwhile, or not ours to read
    text = [a.decode(errors="replace") for a in argv]
    return text if text and "qemu" in Path(text[0]).name else None


def _appliance_children(drives: list[str]) -> list[int]:
    """Our child QEMUs holding one of `drives` (a launching appliance's)."""
    found = []
    for proc in Path("/proc").iterdir():
        argv = _qemu_argv(proc) if proc.name.isdigit() else None
        if argv is None:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and any(d in a for d in drives for a in argv):
                found.append(int(proc.name))
    return found


def time_appliance_launch(virt_type: VirtType) -> float:
    """Launch the appliance on a tiny scratch disk and shut it down: seconds taken."""
    g = new_handle(virt_type)
    try:
        g.add_drive_scratch(1024 * 1024)
        started = time.monotonic()
        g.launch()
        elapsed = time.monotonic() - started
        g.shutdown()
        return elapsed
    finally:
        g.close()


def kill_stale_appliances(instances_dir: Path) -> list[int]:
    """Kill libguestfs appliances left by a previous run of the agent (killed with -9 in
    the middle of an injection): their QEMU outlives the agent, holding a guest's disk
    open and 1 GiB of memory. Found by a command line naming a disk under our instances
    dir that is not a libvirt domain (those run as `-name guest=...`). Returns the pids."""
    needle = str(instances_dir) + "/"
    killed = []
    for proc in Path("/proc").iterdir():
        text = _qemu_argv(proc) if proc.name.isdigit() else None
        if text is None or "-name" in text:
            continue
        if any(needle in a for a in text) and any("guestfs" in a for a in text):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed
