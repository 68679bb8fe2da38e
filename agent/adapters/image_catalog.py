"""The ImageCatalog port on a folder of image manifests (`*/manifest.json`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import ImageNotFound, InvalidInput
from agent.model.image import Image

_PATH_FIELDS = ("disk_file", "kernel", "initrd")


def load_manifest(path: Path) -> Image:
    """An Image from one manifest; relative paths are taken from the manifest's folder.
    Fields the agent does not know (e.g. test-only login data) are ignored."""
    raw = json.loads(path.read_text())
    fields = {k: raw[k] for k in Image.model_fields if k in raw}
    for key in _PATH_FIELDS:
        if fields.get(key):
            fields[key] = (path.parent / fields[key]).resolve()
    if fields.get("disk_file"):
        try:  # the file as it is now, not as the manifest says it was
            fields["size"] = os.stat(fields["disk_file"]).st_size
        except OSError:
            fields["size"] = 0
    return Image(**fields)


def _cached_copy(source: Path, cache_dir: Path, uuid: str) -> Path:
    """A copy of a boot file in the agent's own cache, keyed by content fingerprint.
    QEMU runs unprivileged and must read the kernel and initrd: the folder an image
    comes from (a home, a CI checkout) may not let it through; the cache always does."""
    st = source.stat()
    dest = cache_dir / f"{uuid}-{st.st_size}-{st.st_mtime_ns}-{source.name}"
    if not dest.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o644)
        tmp.rename(dest)
    return dest


class ManifestImageCatalog:
    def __init__(self, *dirs: Path, boot_cache: Path | None = None) -> None:
        self.dirs = dirs
        self.boot_cache = boot_cache

    def _with_cached_boot_files(self, image: Image) -> Image:
        if self.boot_cache is None:
            return image
        update = {key: _cached_copy(getattr(image, key), self.boot_cache, str(image.uuid))
                  for key in ("kernel", "initrd") if getattr(image, key) is not None}
        return image.model_copy(update=update) if update else image

    def list(self) -> list[Image]:
        images: dict[str, Image] = {}
        for d in self.dirs:
            for manifest in sorted(d.glob("*/manifest.json")):
                try:
                    image = load_manifest(manifest)
                except (OSError, ValueError, ValidationError):
                    continue  # a broken manifest hides one image, not the catalog
                images.setdefault(str(image.uuid), image)
        return list(images.values())

    def get(self, ref: str) -> Image:
        for image in self.list():
            if ref in (str(image.uuid), image.name):
                try:
                    return self._with_cached_boot_files(image)
                except OSError as e:
                    raise ImageNotFound(f"image {ref}: boot files unreadable "
                                        f"({e.strerror})") from None
        raise ImageNotFound(f"image {ref} not found")


# Imports are assembled here, one level below the catalog's `*/manifest.json` glob.
STAGING_DIR = ".staging"
_MANIFEST = "manifest.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _StagedImage:
    """A folder under STAGING_DIR that becomes `<catalog>/<uuid>/` when published."""

    def __init__(self, folder: Path, catalog_dir: Path) -> None:
        self.folder = folder
        self.catalog_dir = catalog_dir
        self.published = False

    def copy_in(self, source: Path) -> Path:
        dest = self.folder / "disk"
        if not source.is_file():
            raise InvalidInput(f"{source}: not a regular file", "file")
        try:
            with open(source, "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 4 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:
            raise InvalidInput(f"cannot copy {source}: {e.strerror}", "file") from None
        dest.chmod(0o644)  # QEMU runs unprivileged and reads the base copied from it
        return dest

    def publish(self, image: Image, extra: dict[str, Any]) -> Image:
        disk = self.folder / f"disk.{image.disk_format}"
        os.rename(image.disk_file, disk)
        manifest = {"uuid": str(image.uuid), "name": image.name, "disk_file": disk.name,
                    "disk_format": image.disk_format, "min_disk": image.min_disk,
                    "min_ram": image.min_ram, "properties": dict(image.properties),
                    "size": disk.stat().st_size, **extra}
        path = self.folder / _MANIFEST
        with open(path, "w") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        path.chmod(0o644)
        self.folder.chmod(0o755)
        _fsync_dir(self.folder)
        final = self.catalog_dir / str(image.uuid)
        os.rename(self.folder, final)
        _fsync_dir(self.catalog_dir)
        self.published = True
        return load_manifest(final / _MANIFEST)


class WritableImageCatalog(ManifestImageCatalog):
    """The manifest catalog, with imports written into its first folder (atomically:
    staged, manifest last, renamed in) and images removed from any of its folders."""

    @property
    def import_dir(self) -> Path:
        return self.dirs[0]

    @contextlib.contextmanager
    def staging(self) -> Iterator[_StagedImage]:
        area = self.import_dir / STAGING_DIR
        area.mkdir(parents=True, exist_ok=True)
        staged = _StagedImage(Path(tempfile.mkdtemp(prefix="import-", dir=area)),
                              self.import_dir)
        try:
            yield staged
        finally:
            if not staged.published:
                shutil.rmtree(staged.folder, ignore_errors=True)

    def remove(self, image: Image) -> None:
        folder = image.disk_file.parent
        if not (folder / _MANIFEST).is_file() or folder.parent not in [
                d.resolve() for d in self.dirs]:
            raise ImageNotFound(f"image {image.name}: not a folder of this catalog")
        area = folder.parent / STAGING_DIR
        area.mkdir(exist_ok=True)
        # Out of the catalog in one rename (the manifest goes with it), then deleted.
        doomed = Path(tempfile.mkdtemp(prefix="deleted-", dir=area))
        os.rename(folder, doomed / folder.name)
        shutil.rmtree(doomed, ignore_errors=True)
