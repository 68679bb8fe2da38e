"""Reads what decides the virt type: /dev/kvm, CPU flags, loaded kvm modules."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from agent.model.host import HostCapacity, HostFacts

GIB = 1 << 30


def read_host_facts(proc: Path = Path("/proc"), sys_module: Path = Path("/sys/module"),
                    kvm_device: Path = Path("/dev/kvm")) -> HostFacts:
    flags: set[str] = set()
    try:
        for line in (proc / "cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split()) & {"vmx", "svm"}
    except OSError:
        pass
    modules: set[str] = set()
    # /sys/module rather than /proc/modules: containers often lack the latter.
    with contextlib.suppress(OSError):
        modules = {m.name for m in sys_module.iterdir() if m.name.startswith("kvm")}
    try:
        fd = os.open(kvm_device, os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
        usable = True
    except OSError:
        usable = False
    return HostFacts(kvm_device_usable=usable, cpu_virt_flags=frozenset(flags),
                     kvm_modules=frozenset(modules))


def read_host_capacity(instances_dir: Path, proc: Path = Path("/proc")) -> HostCapacity:
    """CPUs, RAM (MemTotal) and the instances folder's filesystem, in the units Nova's
    hypervisor view uses (MiB, GiB rounded down). A fact that cannot be read is 0."""
    ram_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
                break
    total = used = 0
    with contextlib.suppress(OSError):
        fs = os.statvfs(instances_dir)
        total = fs.f_blocks * fs.f_frsize
        used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    return HostCapacity(vcpus=os.cpu_count() or 0, ram_mb=ram_kb // 1024,
                        disk_total_gb=total // GIB, disk_used_gb=used // GIB)
