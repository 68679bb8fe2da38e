"""The libguestfs injector on real disks, in one batch (one appliance launch): each disk
gets its own files (clones of one image all name /dev/vda in fstab), existing files are
kept as .bak.<timestamp>, new files are 0440 root:root in 0755 root:root parents, the
root password hash lands in /etc/shadow, root's SSH keys in /root/.ssh/authorized_keys
(made 0700/0600 root:root, or appended to without repeating a line), and a hostile or
empty disk fails alone.

Safety against what an image holds: a symlinked directory in a path is resolved inside
the guest's root (never in the appliance), /etc/shadow is written beside and renamed over
(a new inode: a stop mid-write leaves the old one whole) with its owner, group, mode and
non-UTF-8 bytes kept, and a file whose .bak name could not exist fails its disk before
anything on it is touched."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import guestfs
import pytest

from agent.adapters.guestfs_appliance import new_handle
from agent.adapters.guestfs_injector import GuestfsInjector
from agent.adapters.qemu_img import QemuImgDisks
from agent.core.sha512_crypt import sha512_crypt
from agent.errors import InjectionError
from agent.model.injection import InjectedFile, InjectionRequest
from tests.conftest import IMAGES_DIR

BASE = IMAGES_DIR / "busybox-test" / "disk.qcow2"
HASH_A = sha512_crypt("Pass-A-123", "saltsaltsaltsalt")
HASH_B = sha512_crypt("Pass-B-456", "saltsaltsaltsalt")
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWQp/A3mkPeSvRYJpbw/1lBq2h6I2KBVhdSOnBLyicz a@x"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDUbwA6cbNC7pj4VXBTYdcvDtHwRqTzm1F0HbMUjbKuy b@y"
OLD_LINE = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC0 already-there"


def ext4_disk(tmp: Path, name: str, root: Path, size: str = "16M") -> Path:
    raw = tmp / f"{name}.raw"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(raw), size], check=True)
    disk = tmp / f"{name}.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(disk)], check=True)
    return disk


def keyed_disk(tmp: Path) -> Path:
    """A disk whose root already has an authorized_keys (no final newline, holding KEY_B
    already) in a .ssh whose modes sshd would refuse."""
    root = tmp / "keyed-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    ssh = root / "root" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_text(f"{OLD_LINE}\n{KEY_B}")
    (ssh / "authorized_keys").chmod(0o664)
    ssh.chmod(0o777)
    return ext4_disk(tmp, "keyed", root)


SHADOW = b"root:*:19000:0:99999:7:::\ncaf\xe9:!:19000:0:99999:7:::\n"  # latin-1 name
LONG_NAME = "m" * 236  # + ".bak.<10>.<4>" = 256 bytes: no such file name


def tricky_disk(tmp: Path) -> tuple[Path, int]:
    """An ext4 root whose /data is an absolute symlink to /etc and /up a relative one
    climbing above the root; its shadow is 0640 root:42 with a latin-1 line. Returns the
    disk and the inode number of its /etc/shadow."""
    root = tmp / "tricky-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "motd").write_text("tricky motd\n")
    shadow = root / "etc" / "shadow"
    shadow.write_bytes(SHADOW)
    os.chown(shadow, 0, 42)
    shadow.chmod(0o640)
    (root / "data").symlink_to("/etc")
    (root / "up").symlink_to("../../../etc")
    raw = tmp / "tricky.raw"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(raw), "16M"], check=True)
    stat = subprocess.run(["debugfs", "-R", "stat /etc/shadow", str(raw)], check=True,
                          capture_output=True, text=True).stdout
    inode = int(re.search(r"Inode: (\d+)", stat).group(1))
    disk = tmp / "tricky.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(disk)], check=True)
    return disk, inode


def hostile_disk(tmp: Path) -> Path:
    """An ext4 disk whose /etc/motd and /root/.ssh/authorized_keys are symlinks to
/etc/shadow and /etc/issue a directory."""
    root = tmp / "hostile-root"
    (root / "etc" / "issue").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "motd").symlink_to("/etc/shadow")
    (root / "root" / ".ssh").mkdir(parents=True)
    (root / "root" / ".ssh" / "authorized_keys").symlink_to("/etc/shadow")
    return ext4_disk(tmp, "hostile", root)


def bloated_disk(tmp: Path) -> Path:
    """An image author's /etc/shadow of 6 MiB (past what the injector reads back)."""
    root = tmp / "bloated-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    filler = b"".join(b"u%07d:!:19000:0:99999:7:::\n" % i for i in range((6 << 20) // 28))
    (root / "etc" / "shadow").write_bytes(b"root:*:19000:0:99999:7:::\n" + filler)
    return ext4_disk(tmp, "bloated", root, size="24M")


@pytest.fixture(scope="module")
def batch(tmp_path_factory, virt_type):
    tmp = tmp_path_factory.mktemp("inject")
    disks = QemuImgDisks()
    base = tmp / "base.qcow2"
    disks.cache_base(BASE, base)
    a, b, c = tmp / "a.qcow2", tmp / "b.qcow2", tmp / "c.qcow2"
    for d in (a, b, c):
        disks.create_overlay(base, "qcow2", d, 0)
    blank = tmp / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "16M"], check=True)
    hostile = hostile_disk(tmp)
    keyed = keyed_disk(tmp)
    tricky, shadow_inode = tricky_disk(tmp)
    bloated = bloated_disk(tmp)
    requests = [
        InjectionRequest(disk=a, root_password_hash=HASH_A, authorized_keys=(KEY_A,), files=(
            InjectedFile(path="/etc/motd", contents=b"motd of A\n"),
            InjectedFile(path="/opt/new/dir/a.txt", contents=b"only on A\n"))),
        InjectionRequest(disk=b, root_password_hash=HASH_B, files=(
            InjectedFile(path="/etc/motd", contents=b"motd of B\n"),)),
        InjectionRequest(disk=blank, root_password_hash=HASH_A),
        InjectionRequest(disk=hostile, root_password_hash=HASH_A, authorized_keys=(KEY_A,),
                         files=(InjectedFile(path="/etc/motd", contents=b"not into shadow\n"),)),
        InjectionRequest(disk=keyed, authorized_keys=(KEY_A, KEY_B, KEY_A)),
        InjectionRequest(disk=tricky, root_password_hash=HASH_B, files=(
            InjectedFile(path="/data/motd", contents=b"via /data\n"),
            InjectedFile(path="/up/issue.net", contents=b"via /up\n"))),
        InjectionRequest(disk=c, root_password_hash=HASH_B, files=(
            InjectedFile(path="/etc/motd", contents=b"motd of C\n"),
            InjectedFile(path=f"/etc/{LONG_NAME}", contents=b"x"))),
        InjectionRequest(disk=bloated, root_password_hash=HASH_A),
    ]
    injector = GuestfsInjector(virt_type)
    results = injector.inject(requests)
    assert injector.launches == 1
    # Read everything back through a second, read-only appliance.
    g = new_handle(virt_type)
    for r in (a, b, hostile, keyed, tricky, c, bloated):
        g.add_drive_opts(str(r), format="qcow2", readonly=True)
    g.launch()
    yield {"results": results, "g": g, "shadow_inode": shadow_inode,
           "devices": dict(zip(("a", "b", "hostile", "keyed", "tricky", "c", "bloated"),
                               g.list_devices(),
                               strict=True))}
    g.close()


def mounted(batch, name: str) -> guestfs.GuestFS:
    g = batch["g"]
    g.umount_all()
    g.mount_ro(batch["devices"][name], "/")
    return g


def test_each_clone_gets_its_own_files_and_password(batch):
    ra, rb = batch["results"][:2]
    assert rb.written == ("/etc/motd",)
    assert ra.written == ("/etc/motd", "/opt/new/dir/a.txt") and ra.password_set
    g = mounted(batch, "a")
    assert g.cat("/etc/motd") == "motd of A\n"
    assert g.cat("/opt/new/dir/a.txt") == "only on A\n"
    assert g.cat("/etc/shadow").startswith(f"root:{HASH_A}:")
    g = mounted(batch, "b")
    assert g.cat("/etc/motd") == "motd of B\n"
    assert not g.exists("/opt/new")
    assert g.cat("/etc/shadow").startswith(f"root:{HASH_B}:")


def test_existing_file_is_kept_under_its_bak_timestamp_name(batch):
    ra = batch["results"][0]
    backup = ra.backups["/etc/motd"]
    assert re.fullmatch(r"/etc/motd\.bak\.\d{10}\.\d{4}", backup)
    g = mounted(batch, "a")
    assert g.cat(backup) == "compute-agent busybox test guest\n"  # the image's own motd
    assert g.lstatns(backup)["st_mode"] & 0o777 == 0o644


def test_new_files_are_0440_root_root_and_new_dirs_0755(batch):
    g = mounted(batch, "a")
    for path in ("/etc/motd", "/opt/new/dir/a.txt"):
        st = g.lstatns(path)
        assert (st["st_mode"] & 0o7777, st["st_uid"], st["st_gid"]) == (0o440, 0, 0), path
    for d in ("/opt/new", "/opt/new/dir"):
        st = g.lstatns(d)
        assert (st["st_mode"] & 0o7777, st["st_uid"], st["st_gid"]) == (0o755, 0, 0), d


def test_shadow_keeps_its_mode_and_other_entries(batch):
    g = mounted(batch, "a")
    assert g.lstatns("/etc/shadow")["st_mode"] & 0o7777 == 0o600
    assert "daemon:" in g.cat("/etc/shadow")


def test_a_disk_without_a_root_filesystem_fails_alone(batch):
    err = batch["results"][2]
    assert isinstance(err, InjectionError)
    assert "no recognisable root filesystem" in str(err)


def test_a_symlink_in_the_image_is_moved_aside_not_followed(batch):
    r = batch["results"][3]
    assert not isinstance(r, InjectionError), r
    g = mounted(batch, "hostile")
    assert g.is_symlink(r.backups["/etc/motd"])
    assert not g.is_symlink("/etc/motd")
    assert g.cat("/etc/motd") == "not into shadow\n"
    assert g.cat("/etc/shadow").startswith(f"root:{HASH_A}:")


def mode_and_owner(g: guestfs.GuestFS, path: str) -> tuple[int, int, int]:
    st = g.lstatns(path)
    return st["st_mode"] & 0o7777, st["st_uid"], st["st_gid"]


def test_a_key_makes_roots_ssh_folder_and_authorized_keys_as_sshd_wants_them(batch):
    assert batch["results"][0].keys_added == 1
    g = mounted(batch, "a")
    assert mode_and_owner(g, "/root/.ssh") == (0o700, 0, 0)
    assert mode_and_owner(g, "/root/.ssh/authorized_keys") == (0o600, 0, 0)
    assert g.cat("/root/.ssh/authorized_keys") == KEY_A + "\n"
    g = mounted(batch, "b")
    assert not g.exists("/root/.ssh")  # no key asked for: nothing made


def test_keys_are_appended_to_an_existing_file_once_each_and_modes_fixed(batch):
    r = batch["results"][4]
    assert not isinstance(r, InjectionError), r
    assert r.keys_added == 1  # KEY_B was there already, KEY_A was asked for twice
    g = mounted(batch, "keyed")
    assert g.cat("/root/.ssh/authorized_keys") == f"{OLD_LINE}\n{KEY_B}\n{KEY_A}\n"
    assert mode_and_owner(g, "/root/.ssh") == (0o700, 0, 0)
    assert mode_and_owner(g, "/root/.ssh/authorized_keys") == (0o600, 0, 0)


def test_an_authorized_keys_symlink_is_moved_aside_never_written_through(batch):
    r = batch["results"][3]
    assert not isinstance(r, InjectionError), r
    g = mounted(batch, "hostile")
    assert g.is_symlink(r.backups["/root/.ssh/authorized_keys"])
    assert not g.is_symlink("/root/.ssh/authorized_keys")
    assert g.cat("/root/.ssh/authorized_keys") == KEY_A + "\n"
    assert KEY_A not in g.cat("/etc/shadow")


def test_symlinked_directories_resolve_inside_the_guest_root(batch):
    """/data -> /etc and /up -> ../../../etc are the guest's /etc: the appliance's own
    /etc (or /dev, holding other tenants' disks) is never reached through them."""
    r = batch["results"][5]
    assert not isinstance(r, InjectionError), r
    assert r.written == ("/data/motd", "/up/issue.net")
    assert list(r.backups) == ["/data/motd"]
    assert re.fullmatch(r"/etc/motd\.bak\.\d{10}\.\d{4}", r.backups["/data/motd"])
    g = mounted(batch, "tricky")
    assert g.cat("/etc/motd") == "via /data\n"
    assert g.cat(r.backups["/data/motd"]) == "tricky motd\n"
    assert g.cat("/etc/issue.net") == "via /up\n"
    assert g.is_symlink("/data") and g.readlink("/data") == "/etc"
    assert sorted(g.ls("/")) == ["data", "etc", "lost+found", "up"]


def test_shadow_is_replaced_whole_with_its_owner_mode_and_bytes(batch):
    g = mounted(batch, "tricky")
    st = g.lstatns("/etc/shadow")
    assert (st["st_uid"], st["st_gid"], st["st_mode"] & 0o7777) == (0, 42, 0o640)
    assert st["st_ino"] != batch["shadow_inode"]  # written beside, renamed over
    lines = g.read_file("/etc/shadow").split(b"\n")
    assert lines[0].startswith(f"root:{HASH_B}:".encode())
    assert lines[1:] == SHADOW.split(b"\n")[1:]  # the latin-1 line byte for byte
    assert not [n for n in g.ls("/etc") if n.startswith(".compute-agent-")]


def test_a_backup_name_over_255_bytes_fails_the_disk_before_anything_is_touched(batch):
    err = batch["results"][6]
    assert isinstance(err, InjectionError)
    assert "longer than 255 bytes" in str(err)
    g = mounted(batch, "c")
    assert g.cat("/etc/motd") == "compute-agent busybox test guest\n"  # the image's own
    assert not g.read_file("/etc/shadow").startswith(f"root:{HASH_B}:".encode())
    assert not [n for n in g.ls("/etc") if ".bak." in n or n.startswith(".compute-agent-")]


def test_a_shadow_larger_than_the_injector_reads_fails_the_disk_and_is_left_alone(batch):
    """An image author's huge /etc/shadow is refused, not copied into our memory."""
    err = batch["results"][7]
    assert isinstance(err, InjectionError)
    assert "larger than 4 MiB" in str(err)
    g = mounted(batch, "bloated")
    assert g.lstatns("/etc/shadow")["st_size"] > 5 << 20
    assert g.pread("/etc/shadow", 64, 0).startswith(b"root:*:")
