"""The ImageCatalog port on a folder of image manifests (`*/manifest.json`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import ValidationError

from agent.errors import ImageNotFound
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
