"""`auto` picks KVM only where KVM can really run a guest; the reason is always given."""

import pytest

from agent.model.host import HostFacts, VirtType, decide_virt_type


def facts(device=True, flags=("vmx",), modules=("kvm", "kvm_intel")):
    return HostFacts(kvm_device_usable=device, cpu_virt_flags=frozenset(flags),
                     kvm_modules=frozenset(modules))


def test_auto_picks_kvm_with_device_flag_and_vendor_module():
    d = decide_virt_type("auto", facts())
    assert d.virt_type is VirtType.KVM
    assert "vmx" in d.reason


def test_auto_picks_tcg_when_dev_kvm_cannot_be_opened():
    d = decide_virt_type("auto", facts(device=False))
    assert d.virt_type is VirtType.QEMU
    assert "/dev/kvm" in d.reason


def test_auto_picks_tcg_under_kvm_pvm_without_cpu_flags():
    d = decide_virt_type("auto", facts(flags=(), modules=("kvm", "kvm_pvm")))
    assert d.virt_type is VirtType.QEMU
    assert "kvm_pvm" in d.reason and "vmx/svm" in d.reason


def test_auto_picks_tcg_when_only_kvm_pvm_is_loaded_even_with_flags():
    d = decide_virt_type("auto", facts(flags=("svm",), modules=("kvm", "kvm_pvm")))
    assert d.virt_type is VirtType.QEMU


@pytest.mark.parametrize("requested,expected", [("kvm", VirtType.KVM), ("qemu", VirtType.QEMU)])
def test_explicit_choice_wins_over_facts(requested, expected):
    assert decide_virt_type(requested, facts(device=False, flags=())).virt_type is expected


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="virt_type"):
        decide_virt_type("xen", facts())
