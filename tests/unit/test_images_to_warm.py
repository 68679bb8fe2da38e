"""Which images the appliance warmed at start holds spares for, and in which order: the
image built from last comes last (its next spare is the one whose root is mounted ahead)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.core.images import images_to_warm
from agent.model.image import Image
from agent.model.server import Server
from agent.wiring import WARM_AT_START_IMAGES

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def image(name: str) -> Image:
    return Image(uuid=uuid.uuid4(), name=name, disk_file=Path(f"/img/{name}/disk.qcow2"))


def built(img: Image, minutes: int) -> Server:
    at = T0 + timedelta(minutes=minutes)
    return Server(id=uuid.uuid4(), project_id="p", user_id="u", name="s", image_id=img.uuid,
                  flavor_id="1", created_at=at, updated_at=at)


def test_with_no_build_yet_the_catalog_order_is_kept():
    images = [image("a"), image("b"), image("c")]
    assert images_to_warm(images, [], WARM_AT_START_IMAGES) == images


def test_the_image_built_from_last_comes_last_and_never_built_ones_first():
    a, b, c, d = image("a"), image("b"), image("c"), image("d")
    servers = [built(b, 5), built(a, 1), built(b, 2), built(a, 3)]  # b's last: 5, a's: 3
    assert images_to_warm([a, b, c, d], servers, WARM_AT_START_IMAGES) == [c, d, a, b]


def test_only_the_most_recently_built_images_are_kept():
    images = [image(str(i)) for i in range(WARM_AT_START_IMAGES + 2)]
    servers = [built(img, i) for i, img in enumerate(images)]
    servers.append(built(images[0], 99))  # the oldest image was built from again, last
    assert images_to_warm(images, servers, WARM_AT_START_IMAGES) == images[3:] + images[:1]
