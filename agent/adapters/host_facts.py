"""Reads what decides the virt type: /dev/kvm, CPU flags, loaded kvm modules."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from agent.model.host import HostFacts


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
