"""The host's image catalog as the API serves it: read, and removed by an admin unless a
server was built from the image."""

from __future__ import annotations

from uuid import UUID

from agent.core.image_import import delete_image
from agent.errors import ImageNotFound
from agent.model.image import Image
from agent.protocols import ImageWriter, Store


class ImageService:
    def __init__(self, catalog: ImageWriter, store: Store) -> None:
        self.catalog = catalog
        self.store = store

    def list(self) -> list[Image]:
        return self.catalog.list()

    def get(self, image_id: str) -> Image:
        """By uuid only (not by name, as the catalog also allows): Nova's GET /images/{id}."""
        try:
            return self.catalog.get(str(UUID(image_id)))
        except (ValueError, ImageNotFound):
            raise ImageNotFound("Image not found.") from None

    def delete(self, image_id: str) -> Image:
        """Conflict while a server (of any project, deleted ones aside) uses it."""
        image = self.get(image_id)
        users = [str(s.id) for s in self.store.list_servers() if s.image_id == image.uuid]
        return delete_image(self.catalog, users, str(image.uuid))
