"""FakeImageCatalog: the ImageCatalog port over a fixed list, behaving as
ManifestImageCatalog does (get by uuid or name; ImageNotFound otherwise)."""

from __future__ import annotations

import uuid
from pathlib import Path

from agent.errors import ImageNotFound
from agent.model.image import Image


def make_image(name: str, *, min_disk: int = 0, min_ram: int = 0,
               properties: dict[str, str] | None = None, image_id: uuid.UUID | None = None) -> Image:
    return Image(uuid=image_id or uuid.uuid4(), name=name,
                 disk_file=Path(f"/nonexistent/images/{name}/disk.qcow2"),
                 min_disk=min_disk, min_ram=min_ram, properties=properties or {})


class FakeImageCatalog:
    def __init__(self, images: list[Image] | tuple[Image, ...] = ()) -> None:
        self._images = list(images)

    def add(self, image: Image) -> Image:
        self._images.append(image)
        return image

    def list(self) -> list[Image]:
        return list(self._images)

    def get(self, ref: str) -> Image:
        for image in self._images:
            if ref in (str(image.uuid), image.name):
                return image
        raise ImageNotFound(f"image {ref} not found")

    def remove(self, image: Image) -> None:
        self._images = [i for i in self._images if i.uuid != image.uuid]
