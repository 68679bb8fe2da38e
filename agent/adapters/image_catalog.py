"""The ImageCatalog port on a folder of image manifests (`*/manifest.json`)."""

from __future__ import annotations

import json
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


class ManifestImageCatalog:
    def __init__(self, *dirs: Path) -> None:
        self.dirs = dirs

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
                return image
        raise ImageNotFound(f"image {ref} not found")
