"""What every figure shares: the scratch folder, the host's virt type and machine facts,
the test image (and a base copy of its disk), the libguestfs environment for the CLI
tools, and the command runner."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import guestfs

from agent.adapters.host_facts import read_host_facts
from agent.adapters.image_catalog import load_manifest
from agent.model.host import VirtType, decide_virt_type
from agent.model.image import Image
from bench.scratch import Scratch

REPO = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO / "vm-images" / "build"
MANIFEST = IMAGES_DIR / "busybox-test" / "manifest.json"


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command (never through a shell); its stdout. Raises on failure or timeout."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {done.returncode}: "
                           f"{done.stderr.strip()[-800:]}")
    return done.stdout


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _first_line(cmd: list[str]) -> str:
    try:
        return run(cmd, timeout=30).splitlines()[0].strip()
    except (OSError, RuntimeError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def qemu_processes() -> int:
    """qemu-system processes running now (guests and libguestfs appliances of anyone)."""
    try:
        out = run(["pgrep", "-c", "-f", "qemu-system"], timeout=10)
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return 0
    return int(out.strip() or 0)


@dataclass
class Context:
    scratch: Scratch
    virt_type: VirtType
    virt_reason: str
    image: Image
    base: Path  # a copy of the image's disk: libvirt relabels backing files, so never the build folder
    machine: dict[str, Any]
    shared: dict[str, Any] = field(default_factory=dict)  # numbers one figure reuses from another

    @property
    def guestfs_env(self) -> dict[str, str]:
        """What the libguestfs CLI tools need to do what the adapter does through its API."""
        env = {"LIBGUESTFS_BACKEND": "direct"}
        if self.virt_type is VirtType.QEMU:
            env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        return env

    def new_overlay(self, path: Path) -> Path:
        """A fresh qcow2 overlay on the base copy (same as the agent's, not grown)."""
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self.image.disk_format,
             "-b", str(self.base), str(path)])
        return path


def make_context(scratch: Scratch) -> Context:
    decision = decide_virt_type("auto", read_host_facts())
    image = load_manifest(MANIFEST)
    base = scratch.path(f"base.{image.disk_format}")
    shutil.copyfile(image.disk_file, base)
    base.chmod(0o644)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        v = g.version()
        libguestfs = f"{v['major']}.{v['minor']}.{v['release']}"
    finally:
        g.close()
    machine = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "kernel": platform.release(),
        "virt_type": decision.virt_type.value,
        "virt_reason": decision.reason,
        "qemu": _first_line(["qemu-system-x86_64", "--version"]),
        "libvirt": _first_line(["virsh", "--version"]),
        "libguestfs": libguestfs,
        "load_average_start": load_average(),
        "qemu_processes_at_start": qemu_processes(),
    }
    return Context(scratch=scratch, virt_type=decision.virt_type, virt_reason=decision.reason,
                   image=image, base=base, machine=machine)
