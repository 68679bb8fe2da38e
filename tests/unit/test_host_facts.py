"""Host facts come from /proc/cpuinfo, /sys/module and whether /dev/kvm opens."""

from agent.adapters.host_facts import read_host_facts


def test_reads_flags_modules_and_device(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor: 0\nflags\t: fpu sse2 svm avx\n")
    sysmod = tmp_path / "module"
    for m in ("kvm", "kvm_amd", "ext4"):
        (sysmod / m).mkdir(parents=True)
    device = tmp_path / "kvm"
    device.write_text("")
    f = read_host_facts(proc=proc, sys_module=sysmod, kvm_device=device)
    assert f.cpu_virt_flags == {"svm"}
    assert f.kvm_modules == {"kvm", "kvm_amd"}
    assert f.kvm_device_usable


def test_missing_everything_means_no_kvm(tmp_path):
    f = read_host_facts(proc=tmp_path, sys_module=tmp_path / "none", kvm_device=tmp_path / "kvm")
    assert not f.kvm_device_usable and not f.cpu_virt_flags and not f.kvm_modules
