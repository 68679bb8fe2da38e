"""Paths inside a guest's filesystem, resolved here and not by the appliance.

libguestfs mounts the guest at /sysroot in its appliance, and most calls (write, mv,
read_file, chown...) hand "/sysroot" + path to the appliance's kernel: a symlink in the
image's path is then followed in the *appliance*. An image whose /data is a link to /dev
would have `/data/sdb` written to the appliance's device node of another tenant's disk.
So each directory of a path is walked here, one component at a time: a symlink is
resolved against the guest's root (an absolute target starts again at the guest root,
".." stops there), with a bound on hops, and only real directories are stepped into. The
final component is never followed: rename(2) does not follow it, and new contents go to
a fresh name beside it, renamed over it, so a stop mid-write leaves the old file whole.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from typing import TYPE_CHECKING

from agent.errors import InjectionError
from agent.model.injection import DIR_MODE

if TYPE_CHECKING:
    import guestfs  # imported where a handle is made: guestfs_appliance.new_handle

MAX_HOPS = 40  # symlinks followed in one path (Linux's MAXSYMLINKS)
NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs)
MAX_READ = 4 << 20  # bytes of a guest file read back and edited (shadow, authorized_keys)
_CHUNK = 1 << 20  # bytes per pread: well inside libguestfs' 4 MiB message limit


def backup_name(path: str, stamp: str) -> str:
    """The spec's `<path>.bak.<seconds.fraction>`; refused (before anything is touched)
    when its last component would not fit a file name."""
    name = f"{posixpath.basename(path)}.bak.{stamp}"
    if len(name.encode()) > NAME_MAX:
        raise InjectionError(f"cannot inject {path}: its backup name would be longer than "
                             f"{NAME_MAX} bytes")
    return f"{path}.bak.{stamp}"


def resolve_dir(g: guestfs.GuestFS, directory: str, *, create: bool) -> str:
    """`directory` as a path of real directories of the guest (no symlink in it), its
    symlinks resolved inside the guest root; missing directories are made root:root
    0755 when `create`, else refused."""
    todo = directory.split("/")
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":  # `done` holds no symlink: its parent is the lexical one
            if done:
                done.pop()
            continue
        here = "/" + "/".join([*done, part])
        if g.is_symlink(here):  # lstat of a path whose parents are real directories
            hops += 1
            if hops > MAX_HOPS:
                raise InjectionError(f"cannot resolve {directory}: too many symlinks")
            target = g.readlink(here)
            if target.startswith("/"):
                done = []  # absolute: from the guest's root, not the appliance's
            todo = target.split("/") + todo
            continue
        if g.is_dir(here, followsymlinks=False):
            done.append(part)
            continue
        if g.exists(here) or not create:
            raise InjectionError(f"cannot use directory {directory}: {here} is not a "
                                 "directory in the image")
        g.mkdir(here)
        g.chown(0, 0, here)
        g.chmod(DIR_MODE, here)
        done.append(part)
    return "/" + "/".join(done)


def resolve_file(g: guestfs.GuestFS, path: str, *, create_dirs: bool) -> str:
    """`path` with its directory resolved in the guest; the last component as given."""
    directory = resolve_dir(g, posixpath.dirname(path), create=create_dirs)
    return posixpath.join(directory, posixpath.basename(path))


def read_small(g: guestfs.GuestFS, path: str) -> bytes:
    """A plain file of the guest (`path` resolved, its last component checked not to be a
    symlink), whole. By pread: read_file goes through libguestfs' file-transfer protocol,
    ~150 ms a call under TCG against ~2 ms. Refused above MAX_READ: an image author's
    gigabyte /etc/shadow is not copied into our memory."""
    too_large = InjectionError(f"cannot edit {path}: larger than {MAX_READ >> 20} MiB")
    if g.lstatns(path)["st_size"] > MAX_READ:
        raise too_large
    data = b""
    while chunk := g.pread(path, _CHUNK, len(data)):
        data += chunk
        if len(data) > MAX_READ:  # grown since the lstat: refused all the same
            raise too_large
    return data


def replace_file(g: guestfs.GuestFS, path: str, contents: bytes, *, uid: int, gid: int,
                 mode: int, backup: str | None = None) -> None:
    """Put `contents` at `path` (a resolved path) atomically: written to a fresh name in
    the same directory with its owner and mode set, then renamed over `path`. With
    `backup`, what is at `path` (a symlink stays one) is first renamed there."""
    directory = posixpath.dirname(path)
    temp = posixpath.join(directory, f".compute-agent-{uuid.uuid4().hex}.tmp")
    if g.is_symlink(temp) or g.exists(temp):
        raise InjectionError(f"cannot write {path}: a temporary name is taken")
    try:
        g.write(temp, contents)
        g.chown(uid, gid, temp)
        g.chmod(mode, temp)  # after chown, which may clear set-id bits
        if backup is not None:
            g.rename(path, backup)
        g.rename(temp, path)
    except RuntimeError:
        with contextlib.suppress(RuntimeError):
            g.rm_f(temp)
        raise
