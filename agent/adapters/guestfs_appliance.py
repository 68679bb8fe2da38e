"""libguestfs handles, with the backend settings this host needs.

libguestfs's direct backend asks QEMU for accel=kvm:tcg; where KVM is present but cannot
run a guest (see model.host.decide_virt_type) that hangs, so TCG is forced there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.model.host import VirtType

if TYPE_CHECKING:
    import guestfs


def new_handle(virt_type: VirtType) -> guestfs.GuestFS:
    # libguestfs (~16 MiB of libraries) loads with the first handle, not with the daemon:
    # a daemon that injects nothing (no warm appliance, no build yet) never maps it.
    import guestfs
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    if virt_type == VirtType.QEMU:
        g.set_backend_settings(["force_tcg"])
    return g


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
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        text = [a.decode(errors="replace") for a in argv]
        if not text or "qemu" not in Path(text[0]).name or "-name" in text:
            continue
        if any(needle in a for a in text) and any("guestfs" in a for a in text):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed
