"""The DiskInjector port on libguestfs: files, the root password hash and root's SSH keys
go into guest disks through the appliance (never a host mount), so whatever a hostile
image holds (symlinks, odd filesystems) is confined to the appliance.

One appliance launch serves a whole batch: every disk of the batch is added as a drive
before the launch, then each is probed, mounted, changed and unmounted in turn. A disk
that fails does not fail the others. A disk a guest has written gets a launch of its own,
every appliance call is bounded by a watchdog (guestfs_appliance.WatchedHandle), and at
most MAX_PROBED filesystems of a disk are mounted to look for its root.

Roots found: a whole disk, a partition (MBR or GPT; a separate /boot is skipped: it has
no /etc/passwd), a btrfs subvolume, or an LVM volume. LVM is looked at one drive at a
time (lvm_set_filter): clones of one image share their VG's name and UUIDs, and LVM
would otherwise show one of them for all.
"""

from __future__ import annotations

import posixpath
import time
from typing import TYPE_CHECKING

from agent.adapters.guestfs_appliance import ApplianceLimits, new_handle, watched
from agent.adapters.guestfs_paths import (
    backup_name,
    read_small,
    replace_file,
    resolve_dir,
    resolve_file,
)
from agent.errors import InjectionError
from agent.model.host import VirtType
from agent.model.injection import (
    AUTHORIZED_KEYS,
    AUTHORIZED_KEYS_MODE,
    FILE_MODE,
    ROOT_SSH_DIR,
    SSH_DIR_MODE,
    InjectedFile,
    InjectionRequest,
    InjectionResult,
    appliance_groups,
)

if TYPE_CHECKING:
    import guestfs  # imported where a handle is made: guestfs_appliance.new_handle

_DAY = 86400
MAX_PROBED = 16  # filesystems (partitions, volumes) of one disk mounted to find its root


def label_of(i: int) -> str:
    # libguestfs labels: short and alphabetic; a..z, then aa..zz is plenty per batch.
    return "d" + (chr(97 + i) if i < 26 else chr(97 + i // 26 - 1) + chr(97 + i % 26))


def _device_of(g: guestfs.GuestFS, filesystem: str) -> str:
    """The drive a filesystem lives on (a root may be a partition or a whole disk)."""
    try:
        return g.part_to_dev(filesystem)
    except RuntimeError:
        return filesystem


def _drives_of(g: guestfs.GuestFS, filesystems: dict[str, str],
               drives: list[str]) -> dict[str, str | None]:
    """Each filesystem's drive, asked once per batch (each call is a round trip to the
    appliance): the drive itself, a partition's parent, or None (an LVM volume). btrfs
    subvolumes get "": this libguestfs may name their device by its appliance name (one
    letter off), so they are found from their filesystem instead (_subvolumes)."""
    partitions = set(g.list_partitions())

    def drive(fs: str) -> str | None:
        if fs.startswith("btrfsvol:"):
            return ""
        return fs if fs in drives else (_device_of(g, fs) if fs in partitions else None)
    return {fs: drive(fs) for fs in filesystems}


_NOT_ROOT = {"swap", "unknown", "vfat", "iso9660", "squashfs"}


def _probe_root(g: guestfs.GuestFS, filesystems: dict[str, str],
                drive_of: dict[str, str | None], drive: str) -> str | None:
    """A filesystem of `drive` holding /etc/passwd, found by mounting candidates (cheap:
    full inspection costs ~5 s per drive under TCG), then in the subvolumes of its btrfs
    filesystems. None if there is none; at most MAX_PROBED are mounted."""
    candidates = [fs for fs, fstype in sorted(filesystems.items())
                  if fstype not in _NOT_ROOT and drive_of.get(fs) == drive]
    subvolumes: list[str] = []
    for fs in candidates:
        _check_probed(len(candidates) + len(subvolumes))
        holds, subs = _holds_root(g, fs, filesystems[fs] == "btrfs")
        if holds:
            return fs
        subvolumes += [f"btrfsvol:{fs}/{sub}" for sub in subs]
    for i, subvolume in enumerate(subvolumes):
        _check_probed(len(candidates) + i + 1)
        if _holds_root(g, subvolume, False)[0]:
            return subvolume
    return None


def _check_probed(count: int) -> None:
    if count > MAX_PROBED:
        raise InjectionError(f"the guest disk has more than {MAX_PROBED} filesystems and "
                             "subvolumes: they are not all probed for a root")


def _holds_root(g: guestfs.GuestFS, fs: str, btrfs: bool) -> tuple[bool, list[str]]:
    """Whether `fs` has /etc/passwd, and (btrfs) the paths of its subvolumes."""
    try:
        g.mount_ro(fs, "/")
    except RuntimeError:
        return False, []
    try:
        if g.is_file("/etc/passwd", followsymlinks=False):
            return True, []
        return False, ([s["btrfssubvolume_path"] for s in g.btrfs_subvolume_list("/")]
                       if btrfs else [])
    finally:
        g.umount_all()


def _write_file(g: guestfs.GuestFS, f: InjectedFile, stamp: str,
                backups: dict[str, str]) -> None:
    path = resolve_file(g, f.path, create_dirs=True)
    if g.is_dir(path, followsymlinks=False):
        raise InjectionError(f"cannot inject {f.path}: it is a directory in the image")
    backup = None
    if g.exists(path) or g.is_symlink(path):
        # The spec: the existing file is renamed to <path>.bak.<seconds.fraction>.
        backup = backups[f.path] = backup_name(path, stamp)
    replace_file(g, path, f.contents, uid=0, gid=0, mode=FILE_MODE, backup=backup)


def _ssh_dir(g: guestfs.GuestFS, stamp: str, backups: dict[str, str]) -> str:
    """Root's .ssh as a real folder of the guest (root's home made private if absent,
    a symlink or anything not a folder in the way of .ssh moved aside), 0700 root:root."""
    home = posixpath.dirname(ROOT_SSH_DIR)
    if not (g.exists(home) or g.is_symlink(home)):  # an existing home is left as it is
        g.mkdir(home)
        g.chown(0, 0, home)
        g.chmod(SSH_DIR_MODE, home)
    ssh = posixpath.join(resolve_dir(g, home, create=False), posixpath.basename(ROOT_SSH_DIR))
    if g.is_symlink(ssh) or (g.exists(ssh) and not g.is_dir(ssh, followsymlinks=False)):
        backup = backups[ROOT_SSH_DIR] = backup_name(ssh, stamp)
        g.rename(ssh, backup)
    if not g.exists(ssh):
        g.mkdir(ssh)
    g.chown(0, 0, ssh)  # a real folder now: nothing to follow
    g.chmod(SSH_DIR_MODE, ssh)
    return ssh


def _add_authorized_keys(g: guestfs.GuestFS, keys: tuple[str, ...], stamp: str,
                         backups: dict[str, str]) -> int:
    """Append the key lines missing from root's authorized_keys (the file and .ssh made
    if absent); .ssh 0700 and the file 0600, both root:root, as sshd's StrictModes wants.
    A symlink (or anything else not a plain file) in the file's place is moved aside,
    never written through; the file is written beside and renamed over. The number of
    lines added."""
    path = posixpath.join(_ssh_dir(g, stamp, backups), posixpath.basename(AUTHORIZED_KEYS))
    text, backup = b"", None
    if g.is_symlink(path) or (g.exists(path) and not g.is_file(path, followsymlinks=False)):
        backup = backups[AUTHORIZED_KEYS] = backup_name(path, stamp)
    elif g.exists(path):
        text = read_small(g, path)
    present = {line.strip() for line in text.decode("utf-8", "replace").splitlines()}
    new = [k for k in dict.fromkeys(keys) if k.strip() not in present]
    if new:
        if text and not text.endswith(b"\n"):
            text += b"\n"
        text += "".join(f"{k}\n" for k in new).encode("utf-8")
    replace_file(g, path, text, uid=0, gid=0, mode=AUTHORIZED_KEYS_MODE, backup=backup)
    return len(new)


def with_root_hash(shadow: bytes, password_hash: str, today: int) -> bytes:
    """/etc/shadow with root's hash and last-change day set; every other byte as it was
    (names or comments need not be UTF-8)."""
    lines = shadow.split(b"\n")
    for i, line in enumerate(lines):
        fields = line.split(b":")
        if fields[0] == b"root" and len(fields) >= 3:
            fields[1], fields[2] = password_hash.encode(), str(today).encode()
            lines[i] = b":".join(fields)
            return b"\n".join(lines)
    raise InjectionError("cannot set the admin password: no root entry in /etc/shadow")


def _set_root_hash(g: guestfs.GuestFS, password_hash: str) -> None:
    try:
        shadow = resolve_file(g, "/etc/shadow", create_dirs=False)
    except InjectionError:
        shadow = ""
    if not shadow or not g.is_file(shadow, followsymlinks=False):
        raise InjectionError("cannot set the admin password: the image has no /etc/shadow")
    st = g.lstatns(shadow)
    edited = with_root_hash(read_small(g, shadow), password_hash, int(time.time()) // _DAY)
    # Written beside and renamed over: same owner, group and mode, never half-written.
    replace_file(g, shadow, edited, uid=st["st_uid"], gid=st["st_gid"],
                 mode=st["st_mode"] & 0o7777)


def _inject_one(g: guestfs.GuestFS, root: str | None, req: InjectionRequest,
                mounted: bool = False) -> InjectionResult:
    """`mounted`: the root is mounted read-write at / already (_mount_trusted_root)."""
    started = time.monotonic()
    if root is None:
        raise InjectionError("no recognisable root filesystem on the guest disk (is it a "
                             "Linux image with /etc/passwd?)")
    stamp = f"{time.time():.4f}"
    try:
        for f in req.files:  # a name that cannot be backed up fails before anything is touched
            backup_name(f.path, stamp)
        if not mounted:
            g.mount(root, "/")
        backups: dict[str, str] = {}
        keys_added = 0
        if req.authorized_keys:  # before the files, as Nova injects (key, ..., files)
            keys_added = _add_authorized_keys(g, req.authorized_keys, stamp, backups)
        for f in req.files:
            _write_file(g, f, stamp, backups)
        if req.root_password_hash is not None:
            _set_root_hash(g, req.root_password_hash)
    finally:
        g.umount_all()  # flushes this disk; no separate sync per disk
    return InjectionResult(disk=req.disk, written=tuple(f.path for f in req.files),
                           backups=backups, password_set=req.root_password_hash is not None,
                           keys_added=keys_added, seconds=time.monotonic() - started)


def _mount_trusted_root(g: guestfs.GuestFS, candidate: str) -> bool:
    """Mount `candidate` read-write at / if it holds /etc/passwd (else leave nothing
    mounted): for a fresh overlay of a base whose root place is known, this replaces the
    read-only probe and the second mount (~0.3 s of a ~1.3 s warm injection under TCG).
    The disk is a copy of our own base that no guest has run, so a read-write mount of it
    exposes nothing a read-only probe would have kept out."""
    try:
        g.mount(candidate, "/")
    except RuntimeError:
        return False
    if g.is_file("/etc/passwd", followsymlinks=False):
        return True
    g.umount_all()
    return False


class _Layout:
    """The batch's filesystems and the drive of each, listed on first need only: a drive
    whose root is already known (from an earlier disk of the same base) never needs them,
    and list_filesystems alone costs ~2 s under TCG."""

    def __init__(self, g: guestfs.GuestFS, devices: list[str]) -> None:
        self.g = g
        self.devices = devices
        self._filesystems: dict[str, str] | None = None
        self._drive_of: dict[str, str | None] = {}

    @property
    def filesystems(self) -> dict[str, str]:
        if self._filesystems is None:
            self._filesystems = self.g.list_filesystems()
            self._drive_of = _drives_of(self.g, self._filesystems, self.devices)
        return self._filesystems

    @property
    def drive_of(self) -> dict[str, str | None]:
        _ = self.filesystems
        return self._drive_of

    @property
    def has_volumes(self) -> bool:
        """Some filesystem of the batch is on no drive: an LVM volume."""
        return None in self.drive_of.values()


def _volume_root(g: guestfs.GuestFS, device: str) -> str | None:
    """A root among the LVM volumes of `device` alone: LVM is made to see that drive only
    (and activates its VGs), so a clone's VG cannot stand in for this one's."""
    g.lvm_set_filter([device])
    g.vg_activate_all(True)
    volumes = {lv: "lv" for lv in g.lvs()}
    return _probe_root(g, volumes, dict.fromkeys(volumes, device), device)


def _hinted_root(g: guestfs.GuestFS, device: str, suffix: str | None) -> str | None:
    """The root at the place a disk of the same base had it, if it is still one there."""
    if suffix is None:
        return None
    candidate = device + suffix
    return _probe_root(g, {candidate: "hinted"}, {candidate: device}, device)


class GuestfsInjector:
    def __init__(self, virt_type: VirtType, limits: ApplianceLimits | None = None) -> None:
        self.virt_type = virt_type
        self.limits = limits or ApplianceLimits()
        self.launches = 0  # appliance launches so far (reported by metrics and the bench)
        # layout_key -> where its root was on the drive: partition number, "" = whole drive.
        self.root_places: dict[str, str] = {}

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        """Apply each request to its disk: one appliance launch for all the disks no guest
        has written, one each for the others (model.injection.appliance_groups)."""
        results: list[InjectionResult | InjectionError | None] = [None] * len(requests)
        for group in appliance_groups(requests):
            for i, result in zip(group, self._inject_launched([requests[i] for i in group]),
                                 strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def handle(self, drives: list[str]) -> guestfs.GuestFS:
        """A new handle whose calls are bounded by self.limits (`drives`: its disk paths)."""
        return watched(new_handle(self.virt_type), drives, self.limits)

    def _inject_launched(self, requests: list[InjectionRequest]
                         ) -> list[InjectionResult | InjectionError]:
        g = self.handle([str(r.disk) for r in requests])
        try:
            for i, req in enumerate(requests):
                g.add_drive_opts(str(req.disk), format=req.disk_format, readonly=False,
                                 label=label_of(i))
            try:
                g.launch()
            except RuntimeError as e:
                err = InjectionError(f"libguestfs appliance did not start: {_clean(e)}")
                return [err for _ in requests]
            self.launches += 1
            results = self.inject_on(g, g.list_devices(), requests)
            g.umount_all()  # autosync is off: this flushes whatever is still mounted
            g.shutdown()
            return results
        finally:
            g.close()

    def learn_root_places(self, g: guestfs.GuestFS, devices: dict[str, str]) -> None:
        """Find where each layout's root is (layout_key -> a device of a launched
        appliance holding a disk of that layout), read-only, for the layouts not known
        yet: the warm appliance does it at start, so the first build of an image after a
        start does not pay list_filesystems and the probing (~2-5 s under TCG)."""
        layout = _Layout(g, list(devices.values()))
        for key, device in devices.items():
            if key in self.root_places:
                continue
            root = _probe_root(g, layout.filesystems, layout.drive_of, device)
            if root is not None:
                self.root_places[key] = root[len(device):]

    def premount(self, g: guestfs.GuestFS, device: str, layout_key: str) -> bool:
        """Mount the root of `device` (a fresh overlay of the base `layout_key` names,
        whose root place is known) read-write at /, ahead of the injection into it that
        inject_on(mounted=device) then does: ~0.25 s under TCG off a warm build."""
        hint = self.root_places.get(layout_key)
        return hint is not None and _mount_trusted_root(g, device + hint)

    def inject_on(self, g: guestfs.GuestFS, devices: list[str],
                  requests: list[InjectionRequest], mounted: str | None = None
                  ) -> list[InjectionResult | InjectionError]:
        """Apply each request to its device of a launched appliance (devices[i] holds
        requests[i]'s disk, or an identical copy of it). `mounted`: a device whose root
        is mounted at / already (premount)."""
        layout = _Layout(g, devices)
        results: list[InjectionResult | InjectionError] = []
        for device, req in zip(devices, requests, strict=True):
            try:
                hint = self.root_places.get(req.layout_key) if req.layout_key else None
                trusted = (hint is not None and req.fresh_overlay_of is not None
                           and not req.guest_written)
                premounted = trusted and device == mounted
                if mounted is not None and not premounted:
                    g.umount_all()  # another disk comes first: the premount is undone
                mounted = None
                if hint is not None and trusted and (
                        premounted or _mount_trusted_root(g, device + hint)):
                    results.append(_inject_one(g, device + hint, req, mounted=True))
                    continue
                root = _hinted_root(g, device, hint)
                if root is None:
                    root = _probe_root(g, layout.filesystems, layout.drive_of, device)
                    if root is None and layout.has_volumes:
                        root = _volume_root(g, device)
                    if root is not None and root.startswith(device) and req.layout_key:
                        self.root_places[req.layout_key] = root[len(device):]
                results.append(_inject_one(g, root, req))
            except InjectionError as e:
                results.append(e)
            except RuntimeError as e:  # libguestfs reports guest-side errors this way
                results.append(InjectionError(f"injection failed: {_clean(e)}"))
        return results


def _clean(error: Exception) -> str:
    """libguestfs messages name paths and errno; they never hold file contents."""
    return str(error).splitlines()[0][:300]
