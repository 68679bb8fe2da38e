"""Every appliance call is bounded: a call that overruns its limit has the appliance's
QEMU killed and fails naming the limit, and so does every later call on that handle; a
launch that overruns is killed the same way (found among our children by its disk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.adapters.guestfs_appliance import ApplianceLimits, new_handle, watched


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def scratch(tmp_path: Path, virt_type, limits: ApplianceLimits):
    disk = tmp_path / "scratch.raw"
    g = watched(new_handle(virt_type), [str(disk)], limits)
    g.disk_create(str(disk), "raw", 1024 * 1024)
    g.add_drive_opts(str(disk), format="raw")
    return g


def test_a_call_over_its_limit_kills_the_appliance_and_fails(tmp_path, virt_type):
    g = scratch(tmp_path, virt_type, ApplianceLimits(call_s=3.0))
    try:
        g.launch()
        pid = g.get_pid()
        with pytest.raises(RuntimeError, match="sleep took over 3 s"):
            g.sleep(300)  # an appliance call that would hold the batch for 5 minutes
        assert gone(pid)
        with pytest.raises(RuntimeError, match="killed earlier: sleep took over 3 s"):
            g.list_devices()
    finally:
        g.close()


def test_a_launch_over_its_limit_is_killed(tmp_path, virt_type):
    g = scratch(tmp_path, virt_type, ApplianceLimits(launch_s=2.0))
    children_before = set(os.listdir("/proc"))
    try:
        with pytest.raises(RuntimeError, match="launch took over 2 s"):
            g.launch()  # ~11-20 s under TCG
    finally:
        g.close()
    leftover = [p for p in set(os.listdir("/proc")) - children_before
                if p.isdigit() and str(tmp_path) in _cmdline(p)]
    assert leftover == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
