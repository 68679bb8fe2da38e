"""What the agent knows about its host: the virtualisation type and why it was chosen."""

from __future__ import annotations

from enum import StrEnum

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
