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


def test_capacity_reads_cpus_memtotal_and_the_instances_filesystem(tmp_path):
    import os

    from agent.adapters.host_facts import read_host_capacity

    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal:       24576000 kB\nMemFree:  1000 kB\n")
    have = read_host_capacity(tmp_path, proc)
    fs = os.statvfs(tmp_path)
    assert have.ram_mb == 24000 and have.vcpus == os.cpu_count()
    assert have.disk_total_gb == fs.f_blocks * fs.f_frsize // (1 << 30)
    assert 0 <= have.disk_used_gb <= have.disk_total_gb


def test_capacity_that_cannot_be_read_is_zero_not_an_error(tmp_path):
    from agent.adapters.host_facts import read_host_capacity

    have = read_host_capacity(tmp_path / "missing", tmp_path / "noproc")
    assert (have.ram_mb, have.disk_total_gb, have.disk_used_gb) == (0, 0, 0)
