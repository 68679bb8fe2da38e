"""The injector's guest-side logic with a fake appliance (no launch): paths are resolved
inside the guest's root whatever its symlinks say, /etc/shadow edits keep every byte but
root's fields, backup names that cannot exist are refused, and a disk with too many
filesystems is not probed."""

from __future__ import annotations

import pytest

from agent.adapters.guestfs_injector import MAX_PROBED, _probe_root, with_root_hash
from agent.adapters.guestfs_paths import MAX_HOPS, backup_name, resolve_dir
from agent.errors import InjectionError


class FakeGuest:
    """A guest tree: path -> "dir", "file" or ("link", target). Like the real appliance
    it answers lstat-style questions about a path as given."""

    def __init__(self, tree: dict[str, object]) -> None:
        self.tree = {"/": "dir", **tree}
        self.made: list[str] = []

    def is_symlink(self, p):
        return isinstance(self.tree.get(p), tuple)

    def readlink(self, p):
        return self.tree[p][1]

    def is_dir(self, p, followsymlinks=False):
        assert not followsymlinks
        return self.tree.get(p) == "dir"

    def exists(self, p):
        return p in self.tree

    def mkdir(self, p):
        self.tree[p] = "dir"
        self.made.append(p)

    def chown(self, uid, gid, p):
        pass

    def chmod(self, mode, p):
        pass


@pytest.mark.parametrize(("target", "resolved"), [
    ("/etc", "/etc"),                 # absolute: the guest's /etc, not the appliance's
    ("/dev", "/dev"),                 # the guest's /dev (made), never the appliance's
    ("../../../../etc", "/etc"),      # ".." stops at the guest's root
    ("etc/../etc/./", "/etc"),
    ("hop", "/etc"),                  # a chain of links
])
def test_symlinked_directories_resolve_inside_the_guest_root(target, resolved):
    g = FakeGuest({"/etc": "dir", "/data": ("link", target), "/hop": ("link", "/etc")})
    assert resolve_dir(g, "/data", create=True) == resolved


def test_missing_directories_are_made_only_when_asked():
    g = FakeGuest({"/opt": ("link", "/srv")})
    assert resolve_dir(g, "/opt/new/dir", create=True) == "/srv/new/dir"
    assert g.made == ["/srv", "/srv/new", "/srv/new/dir"]
    with pytest.raises(InjectionError, match="not a directory"):
        resolve_dir(FakeGuest({}), "/etc", create=False)


def test_a_file_in_the_path_or_a_symlink_loop_is_refused():
    with pytest.raises(InjectionError, match="not a directory"):
        resolve_dir(FakeGuest({"/etc": "file"}), "/etc/x", create=True)
    g = FakeGuest({"/a": ("link", "/b"), "/b": ("link", "/a")})
    with pytest.raises(InjectionError, match="too many symlinks"):
        resolve_dir(g, "/a", create=True)
    chain = {f"/l{i}": ("link", f"/l{i + 1}") for i in range(MAX_HOPS)}
    assert resolve_dir(FakeGuest({**chain, f"/l{MAX_HOPS}": "dir"}), "/l1", create=False)


def test_a_backup_name_over_255_bytes_is_refused():
    stamp = "1700000000.1234"
    assert backup_name("/etc/motd", stamp) == f"/etc/motd.bak.{stamp}"
    fits = "m" * (255 - len(f".bak.{stamp}"))
    assert backup_name(f"/etc/{fits}", stamp).endswith(stamp)
    with pytest.raises(InjectionError, match="longer than 255 bytes"):
        backup_name(f"/etc/{fits}x", stamp)
    with pytest.raises(InjectionError, match="longer than 255 bytes"):
        backup_name("/etc/" + "é" * 120, stamp)  # bytes, not characters


def test_shadow_edit_sets_root_only_and_keeps_non_utf8_bytes():
    shadow = (b"root:*:19000:0:99999:7:::\n"
              b"caf\xe9:!:19000:0:99999:7:::\n"       # latin-1 name
              b"\xff\xfe:x:1::::::\n")
    out = with_root_hash(shadow, "$6$salt$hash", 20000)
    assert out == shadow.replace(b"root:*:19000:", b"root:$6$salt$hash:20000:")
    with pytest.raises(InjectionError, match="no root entry"):
        with_root_hash(b"daemon:*:1::::::\n", "$6$x$y", 1)


def test_a_disk_with_too_many_filesystems_is_not_probed():
    class Mounts:
        mounted: list[str] = []

        def mount_ro(self, fs, _):
            self.mounted.append(fs)

    g = Mounts()
    many = {f"/dev/sda{i}": "ext4" for i in range(1, MAX_PROBED + 2)}
    with pytest.raises(InjectionError, match=f"more than {MAX_PROBED} filesystems"):
        _probe_root(g, many, dict.fromkeys(many, "/dev/sda"), "/dev/sda")
    assert g.mounted == []
