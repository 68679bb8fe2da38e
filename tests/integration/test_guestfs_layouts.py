"""Injection on real disk layouts, all in one batch (one appliance launch): a root on an
MBR partition, a GPT disk with a separate /boot, an LVM root (twice: two clones of one
disk share their VG's name and UUIDs, and each still gets its own password), and a root
in a btrfs subvolume when this libguestfs has btrfs. /etc/shadow keeps its owner, group,
mode and non-UTF-8 bytes, and is a new inode (written beside, renamed over)."""

from __future__ import annotations

import shutil
from pathlib import Path

import guestfs
import pytest

from agent.adapters.guestfs_appliance import new_handle
from agent.adapters.guestfs_injector import GuestfsInjector
from agent.core.sha512_crypt import sha512_crypt
from agent.model.injection import InjectedFile, InjectionRequest

MB = 1024 * 1024
SHADOW_GID = 42
# A latin-1 user name: not UTF-8, and must come back byte for byte.
SHADOW = b"root:*:19000:0:99999:7:::\ncaf\xe9:!:19000:0:99999:7:::\n"


def make_root(g: guestfs.GuestFS, fs: str, name: str, subvolume: str = "") -> None:
    """A minimal Linux root on `fs` (in `subvolume` of a btrfs): passwd, shadow, motd."""
    g.mount(fs, "/")
    top = ""
    if subvolume:
        g.btrfs_subvolume_create(f"/{subvolume}")
        top = f"/{subvolume}"
    g.mkdir_p(f"{top}/etc")
    g.write(f"{top}/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    g.write(f"{top}/etc/shadow", SHADOW)
    g.chown(0, SHADOW_GID, f"{top}/etc/shadow")
    g.chmod(0o640, f"{top}/etc/shadow")
    g.write(f"{top}/etc/motd", f"{name} motd\n".encode())
    g.umount_all()


def build_disks(tmp: Path, virt_type) -> tuple[dict[str, Path], bool]:
    """Every layout made in one appliance session; whether btrfs could be made."""
    disks = {name: tmp / f"{name}.qcow2" for name in ("mbr", "gpt_boot", "lvm", "btrfs")}
    g = new_handle(virt_type)
    try:
        for name, path in disks.items():
            g.disk_create(str(path), "qcow2", (160 if name == "btrfs" else 64) * MB)
            g.add_drive_opts(str(path), format="qcow2")
        g.launch()
        btrfs = bool(g.feature_available(["btrfs"]))
        dev = {name: g.list_devices()[i] for i, name in enumerate(disks)}
        g.part_disk(dev["mbr"], "mbr")
        g.mkfs("ext4", dev["mbr"] + "1")
        make_root(g, dev["mbr"] + "1", "mbr")

        g.part_init(dev["gpt_boot"], "gpt")
        g.part_add(dev["gpt_boot"], "p", 2048, 2048 + 16 * 2048 - 1)  # 16 MiB /boot
        g.part_add(dev["gpt_boot"], "p", 2048 + 16 * 2048, -2048)
        g.mkfs("ext4", dev["gpt_boot"] + "1")
        g.mount(dev["gpt_boot"] + "1", "/")
        g.write("/vmlinuz-marker", b"boot files\n")
        g.umount_all()
        g.mkfs("ext4", dev["gpt_boot"] + "2")
        make_root(g, dev["gpt_boot"] + "2", "gpt_boot")

        g.part_init(dev["lvm"], "mbr")
        g.part_add(dev["lvm"], "p", 2048, 2048 + 16 * 2048 - 1)
        g.part_add(dev["lvm"], "p", 2048 + 16 * 2048, -1)
        g.mkfs("ext2", dev["lvm"] + "1")
        g.pvcreate(dev["lvm"] + "2")
        g.vgcreate("guestvg", [dev["lvm"] + "2"])
        g.lvcreate("root", "guestvg", 24)
        g.mkfs("ext4", "/dev/guestvg/root")
        make_root(g, "/dev/guestvg/root", "lvm")

        if btrfs:
            g.part_disk(dev["btrfs"], "gpt")
            g.mkfs_btrfs([dev["btrfs"] + "1"])
            make_root(g, dev["btrfs"] + "1", "btrfs", subvolume="@")
        g.shutdown()
    finally:
        g.close()
    if not btrfs:
        del disks["btrfs"]
    disks["lvm_clone"] = tmp / "lvm_clone.qcow2"
    shutil.copyfile(disks["lvm"], disks["lvm_clone"])  # same PV and VG UUIDs
    return disks, btrfs


def hash_for(name: str) -> str:
    return sha512_crypt(f"Pass-{name}-1", "saltsaltsaltsalt")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, virt_type):
    tmp = tmp_path_factory.mktemp("layouts")
    disks, btrfs = build_disks(tmp, virt_type)
    injector = GuestfsInjector(virt_type)
    results = dict(zip(disks, injector.inject([
        InjectionRequest(disk=path, root_password_hash=hash_for(name), files=(
            InjectedFile(path="/etc/motd", contents=f"injected into {name}\n".encode()),))
        for name, path in disks.items()]), strict=True))
    assert injector.launches == 1
    g = new_handle(virt_type)
    for path in disks.values():
        g.add_drive_opts(str(path), format="qcow2", readonly=True)
    g.launch()
    yield {"results": results, "g": g, "btrfs": btrfs,
           "devices": dict(zip(disks, g.list_devices(), strict=True))}
    g.close()


ROOTS = {"mbr": "1", "gpt_boot": "2", "lvm": "lvm", "lvm_clone": "lvm", "btrfs": "btrfs"}


def mounted(layouts, name: str) -> guestfs.GuestFS:
    """The root of disk `name`, read-only; LVM sees that disk alone (clones)."""
    if name == "btrfs" and not layouts["btrfs"]:
        pytest.skip("this libguestfs has no btrfs support (g.feature_available)")
    g, device = layouts["g"], layouts["devices"][name]
    g.umount_all()
    where = ROOTS[name]
    if where == "lvm":
        g.lvm_set_filter([device])
        g.vg_activate_all(True)
        g.mount_ro("/dev/guestvg/root", "/")
    elif where == "btrfs":
        g.mount_options("ro,subvol=@", device + "1", "/")
    else:
        g.mount_ro(device + where, "/")
    return g


@pytest.mark.parametrize("name", list(ROOTS))
def test_each_layout_gets_its_own_password_and_files(layouts, name):
    g = mounted(layouts, name)
    result = layouts["results"][name]
    assert not isinstance(result, Exception), result
    assert g.read_file("/etc/shadow").startswith(f"root:{hash_for(name)}:".encode())
    assert g.cat("/etc/motd") == f"injected into {name}\n"
    made_as = "lvm" if name == "lvm_clone" else name  # a byte copy of the lvm disk
    assert g.cat(result.backups["/etc/motd"]) == f"{made_as} motd\n"


@pytest.mark.parametrize("name", list(ROOTS))
def test_shadow_keeps_owner_group_mode_and_non_utf8_bytes(layouts, name):
    g = mounted(layouts, name)
    st = g.lstatns("/etc/shadow")
    assert (st["st_uid"], st["st_gid"], st["st_mode"] & 0o7777) == (0, SHADOW_GID, 0o640)
    assert g.read_file("/etc/shadow").split(b"\n")[1:] == SHADOW.split(b"\n")[1:]
    assert not [n for n in g.ls("/etc") if n.startswith(".compute-agent-")]


def test_a_separate_boot_is_left_alone(layouts):
    g = layouts["g"]
    g.umount_all()
    g.mount_ro(layouts["devices"]["gpt_boot"] + "1", "/")
    assert sorted(g.ls("/")) == ["lost+found", "vmlinuz-marker"]
