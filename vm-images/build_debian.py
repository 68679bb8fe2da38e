#!/usr/bin/python3
"""Build the `debian-12-test` guest image: Debian 12 (bookworm) as a cloud image is made,
booting from its own disk.

    /usr/bin/python3 vm-images/build_debian.py [--out DIR] [--mirror URL] [--force]

Needs root (mmdebstrap runs maintainer scripts in a chroot; extlinux installs on a
loop-mounted partition), mmdebstrap, extlinux + syslinux-common, e2fsprogs, fdisk
(sfdisk), qemu-utils, and Debian's package mirror (the host's apt sources). Nothing else
is downloaded.

What it makes, in OUT/debian-12-test/:
    disk.qcow2     1 GiB: an MBR partition table, one bootable ext4 partition (the root),
                   extlinux in it and syslinux's MBR boot code in front: no kernel or initrd
                   beside the disk, the guest boots from it as a distribution cloud image does
    manifest.json  what the agent's image catalog reads (no kernel, initrd or cmdline)

The guest: minbase + systemd-sysv, udev, linux-image-cloud-amd64 (Debian's kernel for
virtual machines: virtio, ACPI, no hardware drivers), qemu-guest-agent, openssh-server,
systemd-networkd with a match-all DHCP .network (networkd-wait-online masked: boot never
waits for the network), a serial getty on ttyS0 (console=ttyS0 quiet on the kernel command
line), root locked (no password: the agent sets one), ssh host keys made at sshd's first
start, an empty machine-id (made at first boot), apt lists, caches, docs, man pages and
locales removed.

Rebuilt only when the recipe changes: `recipe_hash` covers this file and the suite. It is
not bit-for-bit reproducible (package versions follow the mirror; dpkg and systemd write
timestamps and machine-ids are emptied but keys differ), which is why its hash does not
depend on the mirror's content: `--force` picks up new packages. Assembled under
OUT/.staging/ and renamed into place, as build.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def _load_build_py() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ca_vm_image_build", HERE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


base = _load_build_py()
BuildError = base.BuildError
run = base.run

IMAGE_NAME = "debian-12-test"
IMAGE_UUID = "7f6a3c2e-1d4b-4e8f-a9c0-3b5d7e9f1a2c"
HOSTNAME = "debian-12-test"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DISK_MIB = 1024
PART_START_MIB = 1
MIN_RAM_MIB = 256
FS_LABEL = "debian-root"
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
EXTLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")

PACKAGES = [
    "systemd-sysv", "udev", "linux-image-cloud-amd64", "qemu-guest-agent",
    "openssh-server", "iproute2", "passwd", "login", "dbus",
]
# dpkg skips these paths (docs, man pages, locales: nobody reads them in a test guest).
DPKG_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*",
                 "/usr/share/info/*", "/usr/share/lintian/*"]

NETWORK = """\
# Every ethernet NIC: DHCP (IPv4). The client identifier is the MAC, so the agent's
# dnsmasq (static leases by MAC) answers it.
[Match]
Type=ether

[Network]
DHCP=ipv4

[DHCPv4]
ClientIdentifier=mac
"""

EXTLINUX_CONF = """\
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 1
LABEL debian
  LINUX /boot/vmlinuz-@KVER@
  INITRD /boot/initrd.img-@KVER@
  APPEND root=UUID=@UUID@ ro console=ttyS0,115200n8 quiet
"""

# Run inside the new root (chroot) once the packages are in.
CUSTOMIZE = r"""set -e
echo @HOSTNAME@ > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\t@HOSTNAME@\n' > /etc/hosts
passwd -l root
systemctl enable systemd-networkd.service serial-getty@ttyS0.service
# Boot must not wait for the network (no route out exists in the tests).
systemctl mask systemd-networkd-wait-online.service
# Bash's bracketed paste would wrap what a test types on the serial console.
echo 'set enable-bracketed-paste off' >> /etc/inputrc
# Host keys per guest, made at first start of sshd (as cloud-init would), not baked in.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/host-keys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
# A machine-id per guest: empty means "make one at first boot".
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/*.log
"""


def recipe_hash() -> str:
    h = hashlib.sha256()
    for label, data in (("build_debian.py", Path(__file__).read_bytes()),
                        ("suite", SUITE.encode())):
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def manifest(rhash: str) -> dict:
    return {
        "uuid": IMAGE_UUID,
        "name": IMAGE_NAME,
        "disk_file": "disk.qcow2",
        "disk_format": "qcow2",
        "min_disk": DISK_MIB // 1024,
        "min_ram": MIN_RAM_MIB,
        "properties": {"os_type": "linux", "os_distro": "debian", "os_version": "12",
                       "hw_disk_bus": "virtio", "hw_vif_model": "virtio",
                       "hw_qemu_guest_agent": "yes"},
        "recipe_hash": rhash,
    }


def up_to_date(final: Path, rhash: str) -> bool:
    try:
        old = json.loads((final / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return old.get("recipe_hash") == rhash and (final / old["disk_file"]).is_file()


def bootstrap(root: Path, script: Path, mirror: str) -> str:
    """mmdebstrap into `root`; returns the kernel version installed."""
    script.write_text(CUSTOMIZE.replace("@HOSTNAME@", HOSTNAME))
    hook = (f'cp {script} "$1/ca-customize.sh" && chroot "$1" sh -e /ca-customize.sh '
            f'&& rm "$1/ca-customize.sh"')
    cmd = ["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
           f"--include={','.join(PACKAGES)}",
           *[f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES],
           f"--customize-hook={hook}", SUITE, str(root), mirror]
    run(cmd, env={"DEBIAN_FRONTEND": "noninteractive"})
    kernels = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BuildError(f"expected one kernel in the new root, found {kernels}")
    return kernels[0]


def write_config(root: Path, kver: str, fs_uuid: str) -> None:
    (root / "etc/systemd/network/80-dhcp.network").write_text(NETWORK)
    (root / "etc/fstab").write_text(f"UUID={fs_uuid}\t/\text4\terrors=remount-ro\t0\t1\n")
    ext = root / "boot/extlinux"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "extlinux.conf").write_text(
        EXTLINUX_CONF.replace("@KVER@", kver).replace("@UUID@", fs_uuid))


@contextlib.contextmanager
def loop_mount(raw: Path, offset: int, size: int, mnt: Path):
    dev = run(["losetup", "--find", "--show", "--offset", str(offset),
               "--sizelimit", str(size), str(raw)]).strip()
    try:
        run(["mount", "-t", "ext4", dev, str(mnt)])
        try:
            yield mnt
        finally:
            run(["umount", str(mnt)])
    finally:
        run(["losetup", "--detach", dev])


def make_disk(root: Path, raw: Path, fs_uuid: str, mnt: Path) -> None:
    """MBR + one bootable Linux partition from 1 MiB, ext4 made from `root` (mke2fs -d,
    written in place at the partition's offset), extlinux installed in it."""
    with open(raw, "wb") as f:
        f.truncate(DISK_MIB * 1024 * 1024)
    table = f"label: dos\nstart={PART_START_MIB}MiB, type=83, bootable\n"
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=table, text=True, check=True,
                   capture_output=True)
    offset = PART_START_MIB * 1024 * 1024
    size = (DISK_MIB - PART_START_MIB) * 1024 * 1024
    # 64bit off: syslinux's ext4 reader predates it on some versions; 1 GiB needs no 64bit.
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^64bit", "-L", FS_LABEL, "-U", fs_uuid,
         "-E", f"offset={offset}", "-d", str(root), str(raw), f"{size // 1024}k"])
    with loop_mount(raw, offset, size, mnt):
        for module in ("ldlinux.c32", "libcom32.c32", "libutil.c32", "menu.c32"):
            src = EXTLINUX_MODULES / module
            if src.is_file():
                shutil.copyfile(src, mnt / "boot/extlinux" / module)
        run(["extlinux", "--install", str(mnt / "boot/extlinux")])
    with open(raw, "r+b") as f:  # the MBR's boot code (440 bytes; the table stays)
        f.write(MBR_BIN.read_bytes()[:440])


def remove_work(work: Path) -> None:
    """Remove the work folder, unless something is still mounted below it (an
    interrupted mmdebstrap's /proc, /dev or /sys: deleting through those would hurt)."""
    mounts = Path("/proc/mounts").read_text().split("\n")
    if any(line.split(" ")[1:2] and line.split(" ")[1].startswith(f"{work}/") for line in mounts):
        base.log(f"note: {work} still has mounts below it; left in place")
        return
    shutil.rmtree(work, ignore_errors=True)


def build(out_dir: Path, mirror: str, force: bool) -> int:
    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise BuildError("must run as root (mmdebstrap chroot, loop mount for extlinux)")
    for tool in ("mmdebstrap", "extlinux", "sfdisk", "mke2fs", "losetup", "qemu-img"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found: install it (see scripts/setup-host.sh)")
    if not MBR_BIN.is_file():
        raise BuildError(f"{MBR_BIN} missing (apt-get install syslinux-common)")
    rhash = recipe_hash()
    final = out_dir / IMAGE_NAME
    if not force and up_to_date(final, rhash):
        print(f"{IMAGE_NAME}: up to date ({final})")
        return 0
    staging = out_dir / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    with open(staging / f"lock-{IMAGE_NAME}", "w") as lock:
        base.fcntl.flock(lock, base.fcntl.LOCK_EX)
        if not force and up_to_date(final, rhash):
            print(f"{IMAGE_NAME}: up to date ({final})")
            return 0
        work = Path(tempfile.mkdtemp(prefix=f"work-{IMAGE_NAME}-", dir=staging))
        new = Path(tempfile.mkdtemp(prefix=f"new-{IMAGE_NAME}-", dir=staging))
        try:
            base.log(f"building {IMAGE_NAME}: mmdebstrap {SUITE} from {mirror}")
            root = work / "root"
            kver = bootstrap(root, work / "customize.sh", mirror)
            fs_uuid = str(uuid.uuid4())
            write_config(root, kver, fs_uuid)
            (work / "mnt").mkdir()
            raw = work / "disk.raw"
            make_disk(root, raw, fs_uuid, work / "mnt")
            run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2",
                 "-o", "compat=1.1", str(raw), str(new / "disk.qcow2")])
            (new / "manifest.json").write_text(json.dumps(manifest(rhash), indent=2) + "\n")
            for p in new.iterdir():
                os.chmod(p, 0o644)
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
            os.chmod(new, 0o755)  # noqa: S103 -- QEMU's user must traverse it
            old = None
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix="old-", dir=staging))
                os.rename(final, old / IMAGE_NAME)
            os.rename(new, final)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            remove_work(work)
            if new.exists():
                shutil.rmtree(new, ignore_errors=True)
    size = (final / "disk.qcow2").stat().st_size
    base.log(f"built {final} (kernel {kver}, disk {size / 2**20:.0f} MiB) "
             f"in {time.monotonic() - t0:.0f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "build",
                    help="output folder (default: vm-images/build)")
    ap.add_argument("--mirror", default=DEFAULT_MIRROR, help=f"default {DEFAULT_MIRROR}")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args(argv)
    try:
        return build(args.out.resolve(), args.mirror, args.force)
    except (BuildError, subprocess.CalledProcessError, OSError) as e:
        base.log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
