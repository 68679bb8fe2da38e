"""The Disks port on qemu-img: qcow2 overlays on cached base images."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from agent.errors import DiskError, InvalidInput

_TIMEOUT_S = 120


def _qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                              timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"qemu-img {args[0]}: {e}") from e
    if done.returncode != 0:
        raise DiskError(f"qemu-img {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


class LocalFiles:
    """The Disks port's small file operations (the workflows' own files: a resize's record,
    a rebuilt disk swapped in) on the local filesystem. The unit tests' fake disks reuse
    them as they are: they touch only the files a test made in its temp folder."""

    def fingerprint(self, path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def exists(self, path: Path) -> bool:
        return path.exists()

    def remove_file(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def replace(self, source: Path, dest: Path) -> None:
        source.replace(dest)

    def write_record(self, path: Path, record: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True))
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.rename(path)

    def read_record(self, path: Path) -> dict[str, Any] | None:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None


class QemuImgDisks(LocalFiles):
    def create_overlay(self, base: Path, base_format: str, dest: Path, size_gib: int) -> None:
        """A qcow2 overlay backed by `base`, grown to `size_gib` if that is larger than
        the base (0 keeps the base's size). Written to a temp name and renamed, so a
        crash never leaves a half-made disk under the final name. Makes dest's folder
        (0755: QEMU runs unprivileged and must reach the disk)."""
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        args = ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base), str(tmp)]
        base_bytes = self.virtual_size(base)
        if size_gib * 1024**3 > base_bytes:
            args.append(f"{size_gib}G")
        try:
            _qemu_img(*args)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)

    def virtual_size(self, path: Path) -> int:
        info = json.loads(_qemu_img("info", "--output=json", "-U", str(path)))
        return int(info["virtual-size"])

    def grow(self, path: Path, size_bytes: int) -> None:
        """Grow a disk's virtual size to `size_bytes` (never shrinks)."""
        if size_bytes > self.virtual_size(path):
            _qemu_img("resize", "-q", str(path), str(size_bytes))

    def copy_resized(self, source: Path, dest: Path, size_gib: int) -> None:
        """A copy of `source` as qcow2, on the same backing file (only the guest's own
        clusters are copied), grown to `size_gib` if larger. Temp name, then rename."""
        info = json.loads(_qemu_img("info", "--output=json", "-U", str(source)))
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        args = ["convert", "-q", "-O", "qcow2"]
        backing = info.get("full-backing-filename") or info.get("backing-filename")
        if backing:
            args += ["-B", backing, "-F", info.get("backing-filename-format", "qcow2")]
        try:
            _qemu_img(*args, str(source), str(tmp))
            if size_gib * 1024**3 > int(info["virtual-size"]):
                _qemu_img("resize", "-q", str(tmp), f"{size_gib}G")
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)

    def version(self) -> str:
        return _qemu_img("--version").splitlines()[0]

    def cache_base(self, source: Path, dest: Path) -> None:
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A temp name of its own: servers built at the same time cache the same image at
        # once. The first to finish links its copy in; the others' (same bytes) go.
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            shutil.copyfile(source, tmp)
            tmp.chmod(0o644)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, dest)
        except OSError as e:
            raise DiskError(f"cannot cache base image {source.name}: {e.strerror}") from e
        finally:
            tmp.unlink(missing_ok=True)

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            raise DiskError(f"could not remove {path}")


# qemu-img on a file someone brought runs with limits, as Nova runs it: a crafted image
# must not make it eat the host's memory or CPU.
_UNTRUSTED_LIMITS = ["prlimit", "--as=1073741824", "--cpu=30", "--"]
_HEAD_BYTES = 4096


def _qemu_img_untrusted(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([*_UNTRUSTED_LIMITS, "qemu-img", *args], capture_output=True,
                              text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"qemu-img {args[0]}: {e}") from e


class QemuImgInspector:
    """The DiskInspector port: qemu-img info/check on a file nobody vouches for."""

    def info(self, path: Path, fmt: str | None = None) -> dict:
        args = ["info", "--output=json", *(["-f", fmt] if fmt else []), str(path)]
        done = _qemu_img_untrusted(*args)
        if done.returncode != 0:
            reason = done.stderr.strip().splitlines()[-1:] or ["no reason given"]
            raise InvalidInput(f"qemu-img cannot read the file (truncated or corrupt?): "
                               f"{reason[0].replace(str(path), 'the file')}", "file")
        return json.loads(done.stdout)

    def check(self, path: Path, fmt: str) -> dict:
        # Exit status 2 (corruptions) and 3 (leaks) still print a report.
        done = _qemu_img_untrusted("check", "--output=json", "-f", fmt, str(path))
        try:
            return json.loads(done.stdout)
        except ValueError:
            reason = done.stderr.strip().splitlines()[-1:] or ["no report"]
            return {"check-errors": 1, "reason": reason[0]}

    def head(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)

    def digests(self, path: Path) -> dict[str, str]:
        md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
        with open(path, "rb") as f:
            while chunk := f.read(4 * 1024 * 1024):
                md5.update(chunk)
                sha512.update(chunk)
        return {"checksum": md5.hexdigest(), "os_hash_algo": "sha512",
                "os_hash_value": sha512.hexdigest()}
