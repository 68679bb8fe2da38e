#!/usr/bin/python3
"""Build the `busybox-test` guest image offline, from Debian packages installed on this host.

    /usr/bin/python3 vm-images/build.py [--out DIR] [--kernel-version KVER] [--force]

Inputs (nothing is downloaded): the kernel /boot/vmlinuz-KVER with its modules in
/lib/modules/KVER (linux-image-amd64) and /bin/busybox (busybox-static). Tools: mke2fs
(e2fsprogs, >= 1.43 for `-d`), qemu-img (qemu-utils), modinfo (kmod).

Outputs, in OUT/busybox-test/ (default OUT: vm-images/build):
    disk.qcow2     ext4 root filesystem (64 MiB virtual), no partition table
    vmlinuz        the host's kernel, for direct kernel boot
    initrd.img     gzip'd newc cpio: busybox + /init that loads virtio/ext4/net/ACPI modules,
                   mounts root= and switch_roots to /sbin/init
    manifest.json  what the agent's image catalog reads (see vm-images/README.md)

The build is idempotent: `recipe_hash` covers this file, every file written into the image
and the exact kernel, modules and busybox used; when the existing manifest has the same hash
and its files exist, the build prints "up to date" and exits. It never mounts anything and
needs no root for the filesystem (ownership is forced to 0:0 with debugfs). A new image is
assembled under OUT/.staging/ and renamed into place, so an interrupted build never leaves
a half image. Timestamps are fixed (SOURCE_DATE_EPOCH style) and the filesystem UUID and
hash seed are constant, so rebuilding the same recipe gives the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

IMAGE_NAME = "busybox-test"
IMAGE_UUID = "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"
# Constant filesystem UUID and directory hash seed: part of what makes the disk reproducible.
FS_UUID = "5c0e2b7a-3d1f-4a8e-9c6b-1f2a3b4c5d6e"
FS_LABEL = "ca-root"
HOSTNAME = "busybox-test"
CMDLINE = "console=ttyS0 root=/dev/vda rw"
ROOTFS_MIB = 64
MIN_DISK_GIB = 1
MIN_RAM_MIB = 64

# Test-only credentials. The guest is a throwaway test fixture; the password is in the
# manifest's `test_login` so tests can log in on the serial console.
TEST_USER = "root"
TEST_PASSWORD = "ca-test-pw"
PASSWORD_SALT = "castaticsalt0001"  # fixed salt: the shadow file is reproducible

# Every timestamp in the outputs (files in the ext4, cpio entries, gzip header, mke2fs).
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
SHADOW_LASTCHG = EPOCH // 86400

# Modules the initramfs loads, in this order, each preceded by its (soft)dependencies as
# resolved with `modinfo -k KVER`. Debian builds all of these as modules.
INITRD_MODULES = ["virtio_pci", "virtio_blk", "ext4", "virtio_net", "button", "evdev"]

MARKER_BOOTED = "CA-GUEST booted"
MARKER_ADDR = "CA-GUEST addr"  # + " <ifname> <mac> <ip>/<prefix>"
MARKER_NO_ROOT = "CA-GUEST error: no root"
MARKER_SHUTDOWN = "CA-GUEST shutdown"


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(f"build.py: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, check=False)
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} not found: install it (see scripts/setup-host.sh)") from e
    if proc.returncode != 0:
        raise BuildError(
            f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


# ---------------------------------------------------------------------------------------
# Host inputs


def _version_key(v: str) -> list[tuple[int, object]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", v) if p]


def pick_kernel(requested: str | None) -> str:
    """The requested kernel version, or the newest one with both a vmlinuz and modules."""
    if requested:
        candidates = [requested]
    else:
        names = [p.name[len("vmlinuz-"):] for p in Path("/boot").glob("vmlinuz-*")]
        candidates = sorted(names, key=_version_key, reverse=True)
    for kver in candidates:
        if Path(f"/boot/vmlinuz-{kver}").is_file() and Path(f"/lib/modules/{kver}").is_dir():
            return kver
    what = f"kernel {requested}" if requested else "any kernel"
    raise BuildError(
        f"{what}: need /boot/vmlinuz-KVER and /lib/modules/KVER (apt-get install linux-image-amd64)"
    )


def busybox_version(busybox: Path) -> str:
    out = subprocess.run([str(busybox)], capture_output=True, text=True, check=False).stdout
    m = re.search(r"BusyBox v\S+ \([^)]*\)", out)
    if not m:
        raise BuildError(f"{busybox} does not look like busybox")
    return m.group(0)


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to / (e.g. 'sbin/acpid'), as `busybox --install -s` would."""
    paths = run([str(busybox), "--list-full"]).split()
    return sorted(p for p in paths if "/" in p and p != "bin/busybox")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path


def _modinfo(kver: str, field: str, name: str) -> list[str]:
    proc = subprocess.run(
        ["modinfo", "-k", kver, "-F", field, name], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BuildError(f"modinfo {name} (kernel {kver}): {proc.stderr.strip()}")
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def _module_name(path: str) -> str:
    base = Path(path).name
    return re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base).replace("-", "_")


def resolve_modules(kver: str, wanted: list[str]) -> list[Module]:
    """Modules to insmod, dependencies first. `depends` are followed; `softdep pre:` names
    (e.g. ext4 -> crypto-crc32c, which ext4 needs to mount a metadata_csum filesystem) are
    resolved as aliases, preferring the *_generic implementation (the SSE4.2 one fails on
    QEMU's default CPU model)."""
    order: list[Module] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        files = _modinfo(kver, "filename", name)
        if not files:
            raise BuildError(f"module {name} not found for kernel {kver}")
        if len(files) > 1:  # an alias with several providers
            generic = [f for f in files if _module_name(f).endswith("_generic")]
            files = generic or files
        path = files[0]
        if path == "(builtin)" or path.startswith("(builtin"):
            return
        mod = _module_name(path)
        if mod in seen:
            return
        if mod in chain:
            raise BuildError(f"module dependency cycle: {' -> '.join((*chain, mod))}")
        deps = [d for line in _modinfo(kver, "depends", path) for d in line.split(",") if d]
        soft: list[str] = []
        mode = None
        for line in _modinfo(kver, "softdep", path):
            for tok in line.split():
                if tok.endswith(":"):
                    mode = tok[:-1]
                elif mode == "pre":
                    soft.append(tok)
        for dep in deps:
            visit(dep, (*chain, mod))
        for dep in soft:
            try:
                visit(dep, (*chain, mod))
            except BuildError as e:
                log(f"note: optional softdep {dep} of {mod} skipped: {e}")
        seen.add(mod)
        order.append(Module(mod, Path(path)))

    for name in wanted:
        visit(name, ())
    return order


def module_bytes(mod: Module) -> bytes:
    """The module as an uncompressed .ko (busybox insmod then needs no decompressor)."""
    data = mod.path.read_bytes()
    suffix = mod.path.name
    if suffix.endswith(".ko.xz"):
        return lzma.decompress(data)
    if suffix.endswith(".ko.gz"):
        return gzip.decompress(data)
    if suffix.endswith(".ko.zst"):
        return subprocess.run(
            ["zstd", "-dc", str(mod.path)], capture_output=True, check=True
        ).stdout
    return data


# ---------------------------------------------------------------------------------------
# What goes into the guest. Scripts run under busybox ash.

INIT_SCRIPT = r"""#!/bin/sh
# initramfs /init of the compute-agent test guest (generated by vm-images/build.py).
# Loads the modules the Debian kernel needs for a virtio ext4 root, mounts root= and
# switch_roots to it. If the root cannot be mounted it prints a marker and opens a shell.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

for m in @MODULES@; do
    insmod "/lib/modules/$m.ko" || echo "CA-GUEST initrd: insmod $m failed"
done

root=/dev/vda
fstype=ext4
mode=rw
init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        rootfstype=*) fstype="${arg#rootfstype=}" ;;
        init=*) init="${arg#init=}" ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
    esac
done

rescue() {
    echo "@NO_ROOT@"
    echo "CA-GUEST initrd: $1"
    while true; do setsid cttyhack sh || sh; done
}

# Wait briefly for the device (module probing is asynchronous), resolving UUID=/LABEL=.
dev=""
i=0
while [ $i -lt 100 ]; do
    case "$root" in
        UUID=*|LABEL=*) dev="$(findfs "$root" 2>/dev/null)" ;;
        *) dev="$root" ;;
    esac
    [ -n "$dev" ] && [ -b "$dev" ] && break
    dev=""
    i=$((i + 1))
    sleep 0.1
done
[ -n "$dev" ] || rescue "root device $root did not appear"

mkdir -p /newroot
mount -t "$fstype" -o "$mode" "$dev" /newroot || rescue "cannot mount $dev ($fstype, $mode)"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || rescue "no $init on $dev"

for fs in dev proc sys; do
    if [ -d "/newroot/$fs" ]; then mount --move "/$fs" "/newroot/$fs"; else umount "/$fs"; fi
done
exec switch_root /newroot "$init"
"""

RCS_SCRIPT = r"""#!/bin/sh
# System start (busybox init ::sysinit). Everything slow runs in the background;
# the "booted" marker is printed when the synchronous part is done. Markers go to the
# console on a line of their own (a newline first: a prompt may be showing).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }
[ -e /proc/self ] || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mounted /var/run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /var/run

# Keep kernel chatter off the serial console: it would interleave with the markers and
# with what tests type and read. `dmesg` still has everything.
dmesg -n 1

hostname -F /etc/hostname

# ACPI power button (libvirt shutdown, mode acpi) -> /etc/acpi/PWRF/00000080 -> poweroff.
# busybox acpid reads /dev/input/event* (evdev + button modules, loaded by the initramfs).
acpid -c /etc/acpi -l /var/log/acpid.log -p /var/run/acpid.pid

ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null

# DHCP on every ethernet NIC, in the background: boot never waits for the network.
# udhcpc keeps retrying (4 tries 3 s apart, then a 5 s pause, ...) until it gets a lease.
for path in /sys/class/net/eth*; do
    [ -e "$path" ] || continue
    ifname="${path##*/}"
    ip link set "$ifname" up
    udhcpc -f -S -i "$ifname" -t 4 -T 3 -A 5 -s /etc/udhcpc/default.script \
        -p "/var/run/udhcpc.$ifname.pid" -x "hostname:$(hostname)" \
        </dev/null >"/var/log/udhcpc.$ifname.log" 2>&1 &
done

printf '\n%s\n' "@BOOTED@" >/dev/console
"""

RCK_SCRIPT = r"""#!/bin/sh
# System stop (busybox init ::shutdown): runs on poweroff/reboot, before init kills
# everything and calls reboot(2).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
printf '\n%s\n' "@SHUTDOWN@" >/dev/console
# Stop the daemons that hold log files open for writing, so / can go read-only and the
# journal is clean (init only kills everything else after this script).
killall -q udhcpc acpid
i=0
while [ $i -lt 30 ] && pidof udhcpc acpid >/dev/null; do
    sleep 0.1
    i=$((i + 1))
done
sync
umount /tmp /var/run /dev/pts 2>/dev/null
mount -o remount,ro / || echo "CA-GUEST note: / not remounted read-only"
sync
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc event script: $1 is deconfig|bound|renew|leasefail|nak; the lease is in
# $interface $ip $mask (prefix length) $router $dns $domain.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        old="$(ip -4 -o addr show dev "$interface" | awk '{print $4}')"
        if [ "$1" = bound ] || [ "$old" != "$ip/$mask" ]; then
            ip -4 addr flush dev "$interface"
            ip addr add "$ip/$mask" ${broadcast:+broadcast "$broadcast"} dev "$interface"
            for r in $router; do
                ip route replace default via "$r" dev "$interface"
                break
            done
            if [ -n "$dns" ]; then
                : >/etc/resolv.conf
                [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
                for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
            fi
            mac="$(cat "/sys/class/net/$interface/address")"
            printf '\n%s\n' "@ADDR@ $interface $mac $ip/$mask" >/dev/console
        fi
        ;;
esac
exit 0
"""

ACPI_POWER_SCRIPT = r"""#!/bin/sh
# Run by busybox acpid (conf dir /etc/acpi) for the ACPI power button event PWRF/00000080.
exec /sbin/poweroff
"""

INITTAB = """\
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
"""

PROFILE = r"""export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PS1='\u@\h:\w\$ '
export LS_COLORS=none
umask 022
"""

OS_RELEASE = """\
NAME="compute-agent test guest"
ID=compute-agent-test
VERSION_ID=1
PRETTY_NAME="compute-agent busybox test guest 1"
"""


@dataclass(frozen=True)
class Entry:
    """One thing in the root filesystem: a directory, a file (data) or a symlink."""

    path: str  # relative to /
    kind: str  # "dir" | "file" | "link"
    mode: int = 0o755
    data: bytes = b""
    target: str = ""


def rootfs_entries(busybox: Path, applets: list[str]) -> list[Entry]:
    pw_hash = run(
        [str(busybox), "mkpasswd", "-m", "sha512", TEST_PASSWORD, PASSWORD_SALT]
    ).strip()
    if not pw_hash.startswith("$6$"):
        raise BuildError(f"busybox mkpasswd gave no SHA-512 hash: {pw_hash!r}")

    def text(s: str) -> bytes:
        return s.encode()

    dirs = {
        "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
        "dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "root": 0o700,
        "home": 0o755, "mnt": 0o755, "etc": 0o755, "etc/init.d": 0o755, "etc/acpi": 0o755,
        "etc/acpi/PWRF": 0o755, "etc/udhcpc": 0o755, "var": 0o755, "var/run": 0o755,
        "var/log": 0o755, "lib": 0o755,
    }
    files = {
        "etc/passwd": (0o644, "root:x:0:0:root:/root:/bin/sh\n"
                              "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                              "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        "etc/group": (0o644, "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"),
        "etc/shadow": (0o600, f"root:{pw_hash}:{SHADOW_LASTCHG}:0:99999:7:::\n"
                              f"daemon:*:{SHADOW_LASTCHG}:0:99999:7:::\n"
                              f"nobody:*:{SHADOW_LASTCHG}:0:99999:7:::\n"),
        "etc/os-release": (0o644, OS_RELEASE),
        "etc/hostname": (0o644, HOSTNAME + "\n"),
        "etc/hosts": (0o644, f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"),
        "etc/fstab": (0o644, f"LABEL={FS_LABEL}\t/\text4\trw\t0\t1\n"),
        "etc/motd": (0o644, "compute-agent busybox test guest\n"),
        "etc/profile": (0o644, PROFILE),
        "etc/shells": (0o644, "/bin/sh\n/bin/ash\n"),
        "etc/inittab": (0o644, INITTAB),
        "etc/init.d/rcS": (0o755, RCS_SCRIPT.replace("@BOOTED@", MARKER_BOOTED)),
        "etc/init.d/rcK": (0o755, RCK_SCRIPT.replace("@SHUTDOWN@", MARKER_SHUTDOWN)),
        "etc/udhcpc/default.script": (0o755, UDHCPC_SCRIPT.replace("@ADDR@", MARKER_ADDR)),
        "etc/acpi/PWRF/00000080": (0o755, ACPI_POWER_SCRIPT),
        "etc/resolv.conf": (0o644, ""),
    }
    entries = [Entry(p, "dir", m) for p, m in dirs.items()]
    entries += [Entry(p, "file", m, text(c)) for p, (m, c) in files.items()]
    entries.append(Entry("bin/busybox", "file", 0o755, busybox.read_bytes()))
    for applet in applets:
        parent = applet.rsplit("/", 1)[0]
        if parent not in dirs:
            raise BuildError(f"unexpected applet location {applet}")
        entries.append(Entry(applet, "link", 0o777, target="/bin/busybox"))
    return sorted(entries, key=lambda e: e.path)


def initrd_script(modules: list[Module]) -> bytes:
    return (
        INIT_SCRIPT.replace("@MODULES@", " ".join(m.name for m in modules))
        .replace("@NO_ROOT@", MARKER_NO_ROOT)
        .encode()
    )


# ---------------------------------------------------------------------------------------
# Recipe hash


def recipe_hash(kver: str, bb_version: str, entries: list[Entry], init: bytes,
                modules: list[Module], kernel: Path) -> str:
    h = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    add("build.py", Path(__file__).read_bytes())
    add("kernel-version", kver.encode())
    add("busybox-version", bb_version.encode())
    add("kernel", kernel.read_bytes())  # same version string, rebuilt package: rebuild
    for e in entries:
        add(f"rootfs:{e.kind}:{e.path}:{e.mode:o}:{e.target}", e.data)
    add("initrd:init", init)
    for m in modules:
        add(f"module:{m.name}", m.path.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Building


def write_tree(root: Path, entries: list[Entry]) -> None:
    for e in entries:
        p = root / e.path
        if e.kind == "dir":
            p.mkdir(parents=True, exist_ok=True)
        elif e.kind == "file":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(e.data)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(e.target, p)
    for e in entries:
        if e.kind != "link":
            os.chmod(root / e.path, e.mode)  # explicit modes: independent of the umask
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))


def make_ext4(tree: Path, entries: list[Entry], raw: Path) -> None:
    with open(raw, "wb") as f:
        f.truncate(ROOTFS_MIB * 1024 * 1024)
    env = {"E2FSPROGS_FAKE_TIME": str(EPOCH), "SOURCE_DATE_EPOCH": str(EPOCH)}
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", FS_LABEL, "-U", FS_UUID, "-m", "1",
         "-E", f"root_owner=0:0,hash_seed={FS_UUID}", "-d", str(tree), str(raw)], env=env)
    # mke2fs -d copies owners and ctimes from the staging tree: force them to 0:0 and the
    # fixed epoch (inode fields only; nothing is mounted).
    cmds = io.StringIO()
    for path in ["/", *("/" + e.path for e in entries)]:
        for field, value in (("uid", "0"), ("gid", "0"), ("ctime", f"@{EPOCH}"),
                             ("atime", f"@{EPOCH}"), ("mtime", f"@{EPOCH}"),
                             ("crtime", f"@{EPOCH}")):
            cmds.write(f'sif "{path}" {field} {value}\n')
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs", dir=raw.parent) as f:
        f.write(cmds.getvalue())
        f.flush()
        run(["debugfs", "-w", "-f", f.name, str(raw)], env=env)
    run(["e2fsck", "-fn", str(raw)], env=env)


class Cpio:
    """A newc ("070701") cpio archive with fixed owners, times and inode numbers."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        raw_name = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, EPOCH, len(data), 0, 0, rdev[0], rdev[1],
                  len(raw_name), 0]
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields)
        self.buf.write(hdr + raw_name)
        self.buf.write(b"\0" * (-(len(hdr) + len(raw_name)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = -1  # the trailer has inode 0
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def make_initrd(busybox: Path, applets: list[str], modules: list[Module], init: bytes,
                out: Path) -> None:
    items: dict[str, tuple] = {}
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sbin", "sys",
              "tmp", "usr", "usr/bin", "usr/sbin"):
        items[d] = ("dir",)
    items["init"] = ("file", init, 0o755)
    items["bin/busybox"] = ("file", busybox.read_bytes(), 0o755)
    for applet in applets:
        items[applet] = ("link", "/bin/busybox")
    for m in modules:
        items[f"lib/modules/{m.name}.ko"] = ("file", module_bytes(m), 0o644)
    items["dev/console"] = ("chr", 5, 1)
    cpio = Cpio()
    for name in sorted(items):  # sorted names: parents before children, stable order
        kind, *rest = items[name]
        if kind == "dir":
            cpio.dir(name)
        elif kind == "file":
            cpio.file(name, rest[0], rest[1])
        elif kind == "link":
            cpio.symlink(name, rest[0])
        else:
            cpio.chardev(name, rest[0], rest[1])
    with open(out, "wb") as f, gzip.GzipFile(
        filename="", fileobj=f, mode="wb", compresslevel=9, mtime=0
    ) as gz:
        gz.write(cpio.finish())


def up_to_date(final: Path, rhash: str) -> bool:
    try:
        manifest = json.loads((final / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("recipe_hash") != rhash:
        return False
    return all((final / manifest[k]).is_file() for k in ("disk_file", "kernel", "initrd"))


def busybox_test_manifest(rhash: str) -> dict:
    return {
        "uuid": IMAGE_UUID,
        "name": IMAGE_NAME,
        "disk_file": "disk.qcow2",
        "disk_format": "qcow2",
        "kernel": "vmlinuz",
        "initrd": "initrd.img",
        "cmdline": CMDLINE,
        "min_disk": MIN_DISK_GIB,
        "min_ram": MIN_RAM_MIB,
        "properties": {"os_type": "linux", "hw_disk_bus": "virtio", "hw_vif_model": "virtio"},
        "test_login": {"user": TEST_USER, "password": TEST_PASSWORD},
        "recipe_hash": rhash,
    }


@dataclass(frozen=True)
class Recipe:
    """What makes one image of this family: its name, the files of its root, the modules
    its initramfs loads, its recipe hash (from this file's) and its manifest. Variants
    (vm-images/build_qga.py) pass their own and share the build and publishing below."""

    name: str
    entries: Callable[[Path, list[str]], list[Entry]]  # (busybox, its applets) -> root files
    initrd_modules: list[str]
    recipe_hash: Callable[[str], str]  # this family's recipe hash -> the image's
    manifest: Callable[[str], dict]  # recipe hash -> manifest.json


BUSYBOX_TEST = Recipe(IMAGE_NAME, rootfs_entries, INITRD_MODULES, lambda h: h,
                      busybox_test_manifest)


def build(out_dir: Path, kver_requested: str | None, force: bool,
          recipe: Recipe = BUSYBOX_TEST) -> int:
    t0 = time.monotonic()
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise BuildError("/bin/busybox missing (apt-get install busybox-static)")
    kver = pick_kernel(kver_requested)
    kernel = Path(f"/boot/vmlinuz-{kver}")
    bb_version = busybox_version(busybox)
    applets = busybox_applets(busybox)
    modules = resolve_modules(kver, recipe.initrd_modules)
    entries = recipe.entries(busybox, applets)
    init = initrd_script(modules)
    rhash = recipe.recipe_hash(recipe_hash(kver, bb_version, entries, init, modules, kernel))

    final = out_dir / recipe.name
    if not force and up_to_date(final, rhash):
        print(f"{recipe.name}: up to date ({final})")
        return 0

    out_dir.mkdir(parents=True, exist_ok=True)
    # The image catalog reads OUT/*/manifest.json: staging lives one level deeper.
    staging = out_dir / ".staging"
    staging.mkdir(exist_ok=True)
    with open(staging / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per output dir
        if not force and up_to_date(final, rhash):
            print(f"{recipe.name}: up to date ({final})")
            return 0
        for old in staging.iterdir():  # leftovers of interrupted builds
            if old.name != "lock":
                shutil.rmtree(old, ignore_errors=True)
        log(f"building {recipe.name}: kernel {kver}, {bb_version}, "
            f"modules {' '.join(m.name for m in modules)}")
        work = Path(tempfile.mkdtemp(prefix="work-", dir=staging))
        new = Path(tempfile.mkdtemp(prefix="new-", dir=staging))
        try:
            tree = work / "rootfs"
            tree.mkdir()
            write_tree(tree, entries)
            raw = work / "rootfs.raw"
            make_ext4(tree, entries, raw)
            run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1",
                 str(raw), str(new / "disk.qcow2")])
            make_initrd(busybox, applets, modules, init, new / "initrd.img")
            shutil.copyfile(kernel, new / "vmlinuz")
            (new / "manifest.json").write_text(json.dumps(recipe.manifest(rhash), indent=2) + "\n")
            # QEMU runs as another user (libvirt-qemu) and must be able to read these.
            for p in new.iterdir():
                os.chmod(p, 0o644)
                os.utime(p, (EPOCH, EPOCH))
            os.chmod(new, 0o755)  # noqa: S103 -- QEMU's user must traverse it
            for f in new.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            # Swap into place: the old image (if any) moves aside, the new one takes its
            # name, then the old one is deleted. Readers see either image, never a half one.
            old = None
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix="old-", dir=staging))
                os.rename(final, old / recipe.name)
            os.rename(new, final)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if new.exists():
                shutil.rmtree(new, ignore_errors=True)
    log(f"built {final} in {time.monotonic() - t0:.1f}s")
    return 0


def main(argv: list[str] | None = None, recipe: Recipe = BUSYBOX_TEST,
         description: str | None = None) -> int:
    ap = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "build",
                    help="output folder (default: vm-images/build)")
    ap.add_argument("--kernel-version", help="KVER of /boot/vmlinuz-KVER (default: newest)")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args(argv)
    try:
        return build(args.out.resolve(), args.kernel_version, args.force, recipe)
    except (BuildError, subprocess.CalledProcessError, OSError) as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            log("interrupted; the previous image (if any) is untouched")
        return 130


if __name__ == "__main__":
    sys.exit(main())
