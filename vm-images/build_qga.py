#!/usr/bin/python3
"""Build the `busybox-qga` guest image: the busybox-test guest plus the QEMU guest agent.

    /usr/bin/python3 vm-images/build_qga.py [--out DIR] [--kernel-version KVER] [--force]

It uses build.py's pieces and leaves build.py as it is: busybox-test's recipe hash covers
build.py, so busybox-test is neither changed nor rebuilt by this image. What differs from
busybox-test:

  - qemu-ga from Debian's qemu-guest-agent (/usr/sbin/qemu-ga), with every shared
    library `ldd` lists for it (the ELF interpreter included), at the paths ldd names;
  - /usr/sbin/chpasswd, a small ash script: qemu-ga's guest-set-user-password runs
    `chpasswd` (`chpasswd -e` for a crypt hash) with "user:password" on stdin, and
    Debian's busybox-static is built without a chpasswd applet;
  - virtio_console in the initramfs, so the virtio-serial port shows up;
  - rcS finds the port named org.qemu.guest_agent.0 in /sys/class/virtio-ports (there is
    no udev), links /dev/virtio-ports/org.qemu.guest_agent.0 to it, prints
    `CA-GUEST qga <dev>` and runs qemu-ga on it; rcK stops qemu-ga before / goes read-only;
  - its own uuid, name and hostname, and the manifest property hw_qemu_guest_agent=yes.

Like build.py: deterministic, rebuilt only when its recipe hash (build.py's recipe hash of
this image, plus this file) changes, assembled under OUT/.staging/ and renamed into place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def _load_build_py() -> ModuleType:
    """vm-images/build.py as a module (by path: `build` is also a PyPI package's name)."""
    spec = importlib.util.spec_from_file_location("ca_vm_image_build", HERE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


base = _load_build_py()
Entry = base.Entry
BuildError = base.BuildError

IMAGE_NAME = "busybox-qga"
IMAGE_UUID = "5d3c1f0e-9a8b-4c7d-8e6f-0a1b2c3d4e5f"
HOSTNAME = "busybox-qga"
QEMU_GA = Path("/usr/sbin/qemu-ga")
GUEST_AGENT_PORT = "org.qemu.guest_agent.0"
INITRD_MODULES = [*base.INITRD_MODULES, "virtio_console"]
MARKER_QGA = "CA-GUEST qga"  # + " <dev>": qemu-ga is being started on that port
MARKER_NO_QGA = "CA-GUEST error: no guest agent port"

QGA_START = r"""
# QEMU guest agent. No udev here: find the virtio-serial port named
# @PORT@ in sysfs (it may appear a moment after the driver
# loads), give it the name udev would, and run qemu-ga on it in the background.
(
    i=0
    while [ $i -lt 100 ]; do
        for port in /sys/class/virtio-ports/vport*; do
            [ "$(cat "$port/name" 2>/dev/null)" = @PORT@ ] || continue
            dev="/dev/${port##*/}"
            mkdir -p /dev/virtio-ports
            ln -sf "$dev" /dev/virtio-ports/@PORT@
            printf '\n%s\n' "@QGA@ $dev" >/dev/console
            exec qemu-ga -m virtio-serial -p "$dev" -t /var/run -f /var/run/qemu-ga.pid \
                -l /var/log/qemu-ga.log
        done
        i=$((i + 1))
        sleep 0.1
    done
    printf '\n%s\n' "@NO_QGA@" >/dev/console
) </dev/null >/dev/null 2>&1 &

"""

CHPASSWD_SCRIPT = r"""#!/bin/sh
# chpasswd for the busybox-qga guest (Debian's busybox-static has no chpasswd applet).
# qemu-ga's guest-set-user-password runs `chpasswd` or `chpasswd -e` with one
# "user:password" line on stdin. -e: the password is already a crypt hash; otherwise it
# is hashed here (SHA-512, read from stdin, never on a command line). The hash goes into
# /etc/shadow through a temporary file and a rename. Fails for an unknown user.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
crypted=no
[ "$1" = -e ] && crypted=yes
umask 077
status=0
while IFS= read -r line; do
    user="${line%%:*}"
    pw="${line#*:}"
    if [ -z "$user" ] || [ "$user" = "$line" ]; then status=1; continue; fi
    if [ "$crypted" = yes ]; then
        hash="$pw"
    else
        hash="$(printf '%s\n' "$pw" | mkpasswd -m sha512 -P 0)" || { status=1; continue; }
    fi
    if U="$user" H="$hash" D="$(($(date +%s) / 86400))" awk -F: -v OFS=: \
        '$1 == ENVIRON["U"] { $2 = ENVIRON["H"]; $3 = ENVIRON["D"]; found = 1 } { print }
         END { exit !found }' /etc/shadow >/etc/shadow.new; then
        mv /etc/shadow.new /etc/shadow
    else
        rm -f /etc/shadow.new
        status=1
    fi
done
sync
exit $status
"""


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    if text.count(old) != 1:
        raise BuildError(f"{where}: expected one {old!r} (build.py changed?)")
    return text.replace(old, new)


def shared_libraries(binary: Path) -> list[Path]:
    """What the dynamic loader maps for `binary` (ELF interpreter included), as ldd lists
    it; vDSOs have no file and are skipped."""
    out = base.run(["ldd", str(binary)])
    if "not found" in out:
        raise BuildError(f"{binary}: missing shared libraries:\n{out}")
    libs = [Path(m.group(1)) for m in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)", out)]
    if not libs:
        raise BuildError(f"{binary}: ldd listed no libraries:\n{out}")
    return sorted(set(libs))


def qga_entries(busybox: Path, applets: list[str]) -> list[Entry]:
    """busybox-test's root filesystem with qemu-ga, its libraries, chpasswd and the
    start/stop of the agent, under this image's hostname."""
    if not QEMU_GA.is_file():
        raise BuildError(f"{QEMU_GA} missing (apt-get install qemu-guest-agent)")
    entries = {e.path: e for e in base.rootfs_entries(busybox, applets)}

    def edit(path: str, fn) -> None:
        e = entries[path]
        entries[path] = Entry(e.path, e.kind, e.mode, fn(e.data.decode()).encode())

    booted = f"printf '\\n%s\\n' \"{base.MARKER_BOOTED}\" >/dev/console"
    start = (QGA_START.replace("@PORT@", GUEST_AGENT_PORT).replace("@QGA@", MARKER_QGA)
             .replace("@NO_QGA@", MARKER_NO_QGA))
    edit("etc/init.d/rcS", lambda s: _replace_once(s, booted, start.lstrip("\n") + booted, "rcS"))
    edit("etc/init.d/rcK", lambda s: _replace_once(
        _replace_once(s, "killall -q udhcpc acpid", "killall -q udhcpc acpid qemu-ga", "rcK"),
        "pidof udhcpc acpid", "pidof udhcpc acpid qemu-ga", "rcK"))
    edit("etc/hostname", lambda s: HOSTNAME + "\n")
    edit("etc/hosts", lambda s: f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")

    def add(entry: Entry) -> None:
        if entry.path in entries:
            raise BuildError(f"{entry.path} is already in the image")
        parts = entry.path.split("/")
        for i in range(1, len(parts)):  # parent folders the base tree lacks
            parent = "/".join(parts[:i])
            entries.setdefault(parent, Entry(parent, "dir", 0o755))
        entries[entry.path] = entry

    add(Entry("usr/sbin/qemu-ga", "file", 0o755, QEMU_GA.read_bytes()))
    for lib in shared_libraries(QEMU_GA):  # symlinks resolved: the soname holds the bytes
        add(Entry(str(lib).lstrip("/"), "file", 0o755, lib.read_bytes()))
    if "usr/sbin/chpasswd" not in applets:  # a busybox with the applet needs no script
        add(Entry("usr/sbin/chpasswd", "file", 0o755, CHPASSWD_SCRIPT.encode()))
    return sorted(entries.values(), key=lambda e: e.path)


def qga_recipe_hash(base_hash: str) -> str:
    h = hashlib.sha256()
    for label, data in (("base", base_hash.encode()), ("build_qga.py", Path(__file__).read_bytes())):
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def manifest(rhash: str) -> dict:
    """busybox-test's manifest, with this image's name, uuid and the guest-agent property."""
    out = base.busybox_test_manifest(rhash)
    out.update(uuid=IMAGE_UUID, name=IMAGE_NAME)
    out["properties"] = {**out["properties"], "hw_qemu_guest_agent": "yes"}
    return out


RECIPE = base.Recipe(IMAGE_NAME, qga_entries, INITRD_MODULES, qga_recipe_hash, manifest)


def build(out_dir: Path, kver_requested: str | None, force: bool) -> int:
    return base.build(out_dir, kver_requested, force, RECIPE)


def main(argv: list[str] | None = None) -> int:
    return base.main(argv, RECIPE, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
