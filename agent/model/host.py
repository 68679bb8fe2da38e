"""What the agent knows about its host: the virtualisation type and why it was chosen."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from ipaddress import IPv4Network
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class VirtType(StrEnum):
    """libvirt domain types the agent can use. `qemu` is TCG (software emulation)."""

    KVM = "kvm"
    QEMU = "qemu"


class HostFacts(BaseModel):
    """Observations about the host that decide whether KVM can really run a guest."""

    model_config = ConfigDict(frozen=True)

    kvm_device_usable: bool
    cpu_virt_flags: frozenset[str]  # subset of {"vmx", "svm"} found in /proc/cpuinfo
    kvm_modules: frozenset[str]  # loaded kvm* kernel modules, e.g. {"kvm", "kvm_intel"}


class HostCapacity(BaseModel):
    """What the machine has for guests (the fleet's heartbeats carry it, issue 12)."""

    model_config = ConfigDict(frozen=True)

    vcpus: int
    ram_mb: int
    disk_total_gb: int  # the filesystem of the instances folder
    disk_used_gb: int


class VirtDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    virt_type: VirtType
    reason: str


def decide_virt_type(requested: str, facts: HostFacts) -> VirtDecision:
    """Pick the domain type. `auto` picks KVM only where KVM can really run a guest.

    A /dev/kvm that opens is not enough: the `kvm_pvm` module (pagetable-based nested
    virtualisation) provides one on hosts without vmx/svm, and a normal guest kernel
    hangs silently under it. So `auto` also wants a hardware virtualisation flag and a
    vendor module.
    """
    if requested == VirtType.QEMU:
        return VirtDecision(virt_type=VirtType.QEMU, reason="virt_type=qemu configured (TCG)")
    if requested == VirtType.KVM:
        return VirtDecision(virt_type=VirtType.KVM, reason="virt_type=kvm configured")
    if requested != "auto":
        raise ValueError(f"virt_type must be auto, kvm or qemu, not {requested!r}")
    if not facts.kvm_device_usable:
        return VirtDecision(virt_type=VirtType.QEMU, reason="/dev/kvm missing or cannot be opened: TCG")
    if not facts.cpu_virt_flags:
        return VirtDecision(
            virt_type=VirtType.QEMU,
            reason="/dev/kvm opens but the CPU shows no vmx/svm flag"
            + (" (kvm_pvm nested virtualisation)" if "kvm_pvm" in facts.kvm_modules else "")
            + ": guests would hang under KVM, using TCG",
        )
    if "kvm_pvm" in facts.kvm_modules and not facts.kvm_modules & {"kvm_intel", "kvm_amd"}:
        return VirtDecision(
            virt_type=VirtType.QEMU,
            reason="only the kvm_pvm module is loaded: guests would hang under KVM, using TCG",
        )
    flag = ",".join(sorted(facts.cpu_virt_flags))
    return VirtDecision(virt_type=VirtType.KVM, reason=f"/dev/kvm usable and CPU has {flag}: KVM")


class CheckResult(BaseModel):
    """One line of `compute-agent doctor`: what was checked, what was found, and the fix."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    detail: str
    fix: str = ""
    # A failed required check means the host cannot provision servers at all.
    required: bool = True


# -- what would fail every build: found at start (the daemon refuses to serve) and by doctor

class HostRoute(BaseModel):
    """One IPv4 route of the host's main table."""

    model_config = ConfigDict(frozen=True)

    destination: IPv4Network
    interface: str  # "" when it has none of its own (multipath, blackhole)


def untraversable_folder(target: Path, mode_of: Callable[[Path], int | None]) -> Path | None:
    """The first folder above `target`, from / down, that other users cannot traverse
    (no o+x): QEMU (libvirt-qemu) and dnsmasq (nobody) run unprivileged and reach their
    files below `target` through every one of them. `mode_of` gives a folder's st_mode,
    None when it does not exist yet (then the agent makes it, 0755, and the rest too)."""
    for folder in reversed(target.parents):
        mode = mode_of(folder)
        if mode is None:
            return None
        if not mode & 0o001:
            return folder
    return None


def overlapping_routes(cidr: IPv4Network, bridge: str,
                       routes: Iterable[HostRoute]) -> list[HostRoute]:
    """Host routes a network's subnet overlaps: its guests' addresses would be routed
    elsewhere (or the host's traffic into the bridge). The default route and the
    network's own bridge route do not count."""
    return [r for r in routes if r.destination.prefixlen > 0 and r.interface != bridge
            and r.destination.overlaps(cidr)]
