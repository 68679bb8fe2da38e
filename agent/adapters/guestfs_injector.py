"""The DiskInjector port on libguestfs: files and the root password hash go into guest
disks through the appliance (never a host mount), so whatever a hostile image holds
(symlinks, odd filesystems) is confined to the appliance.

One appliance launch serves a whole batch: every disk of the batch is added as a drive
before the launch, then each is inspected, mounted, changed and unmounted in turn. A disk
that fails does not fail the others.
"""

from __future__ import annotations

import posixpath
import time
from typing import TYPE_CHECKING

from agent.adapters.guestfs_appliance import new_handle
from agent.errors import InjectionError
from agent.model.host import VirtType
from agent.model.injection import (
    DIR_MODE,
    FILE_MODE,
    InjectedFile,
    InjectionRequest,
    InjectionResult,
)

if TYPE_CHECKING:
    import guestfs  # imported where a handle is made: guestfs_appliance.new_handle

_DAY = 86400


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
    appliance): the drive itself, a partition's parent, or None (an LVM volume)."""
    partitions = set(g.list_partitions())
    return {fs: fs if fs in drives else (_device_of(g, fs) if fs in partitions else None)
            for fs in filesystems}


_NOT_ROOT = {"swap", "unknown", "vfat", "iso9660", "squashfs"}


def _probe_root(g: guestfs.GuestFS, filesystems: dict[str, str],
                drive_of: dict[str, str | None], drive: str) -> str | None:
    """A filesystem of `drive` holding /etc/passwd, found by mounting candidates (cheap:
    full inspection costs ~5 s per drive under TCG). None if no plain one is there."""
    for fs, fstype in sorted(filesystems.items()):
        if fstype in _NOT_ROOT or drive_of.get(fs) != drive:
            continue
        try:
            g.mount_ro(fs, "/")
        except RuntimeError:
            continue
        try:
            if g.is_file("/etc/passwd", followsymlinks=False):
                return fs
        finally:
            g.umount_all()
    return None


def _root_mounts(g: guestfs.GuestFS, root: str | None, inspected: bool) -> list[tuple[str, str]]:
    """(mountpoint, filesystem) of an OS root, shallowest first.

    Inspection resolves the guest's /etc/fstab, and clones of one image all say e.g.
    /dev/vda there, which maps to the *first* drive of the batch. So the root itself is
    mounted at /, and other mountpoints only when they live on the root's own drive. A
    root found by probing (not inspected) is mounted alone.
    """
    if root is None:
        raise InjectionError("no recognisable root filesystem on the guest disk (is it a "
                             "Linux image with /etc/passwd?)")
    if not inspected:
        return [("/", root)]
    drive = _device_of(g, root)
    extra = [(mp, fs) for mp, fs in g.inspect_get_mountpoints(root).items()
             if mp != "/" and _device_of(g, fs) == drive]
    return [("/", root), *sorted(extra, key=lambda kv: len(kv[0]))]


def _mkdirs(g: guestfs.GuestFS, directory: str) -> None:
    """Create missing parents root:root 0755 (existing ones are left as they are)."""
    path = "/"
    for part in directory.strip("/").split("/"):
        if not part:
            continue
        path = posixpath.join(path, part)
        if g.is_dir(path, followsymlinks=True):
            continue
        if g.exists(path):
            raise InjectionError(f"cannot create directory {path}: something else is there")
        g.mkdir(path)
        g.chown(0, 0, path)
        g.chmod(DIR_MODE, path)


def _write_file(g: guestfs.GuestFS, f: InjectedFile, backups: dict[str, str]) -> None:
    _mkdirs(g, posixpath.dirname(f.path))
    if g.is_dir(f.path, followsymlinks=False):
        raise InjectionError(f"cannot inject {f.path}: it is a directory in the image")
    if g.exists(f.path) or g.is_symlink(f.path):
        # The spec: the existing file is renamed to <path>.bak.<seconds.fraction>.
        backup = f"{f.path}.bak.{time.time():.4f}"
        g.mv(f.path, backup)
        backups[f.path] = backup
    g.write(f.path, f.contents)
    g.chown(0, 0, f.path)
    g.chmod(FILE_MODE, f.path)


def _set_root_hash(g: guestfs.GuestFS, password_hash: str) -> None:
    if not g.is_file("/etc/shadow", followsymlinks=False):
        raise InjectionError("cannot set the admin password: the image has no /etc/shadow")
    lines = g.read_file("/etc/shadow").decode("utf-8", "replace").split("\n")
    today = str(int(time.time()) // _DAY)
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 3:
            fields[1], fields[2] = password_hash, today
            lines[i] = ":".join(fields)
            break
    else:
        raise InjectionError("cannot set the admin password: no root entry in /etc/shadow")
    # write() truncates in place: the file keeps its owner and mode.
    g.write("/etc/shadow", "\n".join(lines).encode())


def _inject_one(g: guestfs.GuestFS, root: str | None, inspected: bool,
                req: InjectionRequest) -> InjectionResult:
    started = time.monotonic()
    for mountpoint, fs in _root_mounts(g, root, inspected):
        g.mount(fs, mountpoint)
    try:
        backups: dict[str, str] = {}
        for f in req.files:
            _write_file(g, f, backups)
        if req.root_password_hash is not None:
            _set_root_hash(g, req.root_password_hash)
    finally:
        g.umount_all()  # flushes this disk; no separate sync per disk
    return InjectionResult(disk=req.disk, written=tuple(f.path for f in req.files),
                           backups=backups, password_set=req.root_password_hash is not None,
                           seconds=time.monotonic() - started)


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


def _hinted_root(g: guestfs.GuestFS, device: str, suffix: str | None) -> str | None:
    """The root at the place a disk of the same base had it, if it is still one there."""
    if suffix is None:
        return None
    candidate = device + suffix
    return _probe_root(g, {candidate: "hinted"}, {candidate: device}, device)


class GuestfsInjector:
    def __init__(self, virt_type: VirtType) -> None:
        self.virt_type = virt_type
        self.launches = 0  # appliance launches so far (reported by metrics and the bench)
        # layout_key -> where its root was on the drive: partition number, "" = whole drive.
        self.root_places: dict[str, str] = {}

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        """Apply each request to its disk with one appliance launch for all of them."""
        if not requests:
            return []
        g = new_handle(self.virt_type)
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

    def inject_on(self, g: guestfs.GuestFS, devices: list[str],
                  requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        """Apply each request to its device of a launched appliance (devices[i] holds
        requests[i]'s disk, or an identical copy of it)."""
        layout = _Layout(g, devices)
        inspected: dict[str, str] | None = None
        results: list[InjectionResult | InjectionError] = []
        for device, req in zip(devices, requests, strict=True):
            try:
                hint = self.root_places.get(req.layout_key) if req.layout_key else None
                root = _hinted_root(g, device, hint)
                by_inspection = False
                if root is None:
                    root = _probe_root(g, layout.filesystems, layout.drive_of, device)
                    by_inspection = root is None and None in layout.drive_of.values()
                if by_inspection:  # LVM: only inspection knows a volume's drive
                    if inspected is None:
                        inspected = {_device_of(g, r): r for r in reversed(g.inspect_os())}
                    root = inspected.get(device)
                elif root is not None and req.layout_key:
                    self.root_places[req.layout_key] = root[len(device):]
                results.append(_inject_one(g, root, by_inspection, req))
            except InjectionError as e:
                results.append(e)
            except RuntimeError as e:  # libguestfs reports guest-side errors this way
                results.append(InjectionError(f"injection failed: {_clean(e)}"))
        return results


def _clean(error: Exception) -> str:
    """libguestfs messages name paths and errno; they never hold file contents."""
    return str(error).splitlines()[0][:300]
