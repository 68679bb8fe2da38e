"""libguestfs handles, with the backend settings this host needs.

libguestfs's direct backend asks QEMU for accel=kvm:tcg; where KVM is present but cannot
run a guest (see model.host.decide_virt_type) that hangs, so TCG is forced there.
"""

from __future__ import annotations

import time

import guestfs

from agent.model.host import VirtType


def new_handle(virt_type: VirtType) -> guestfs.GuestFS:
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
