"""Flavors: the size of a server (vCPUs, RAM, root disk)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Flavor(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=255)
    vcpus: int = Field(ge=1, le=64)
    ram: int = Field(ge=32, description="MiB")
    disk: int = Field(ge=0, description="GiB; 0 keeps the image's size")


DEFAULT_FLAVORS = (
    Flavor(id="1", name="m1.tiny", vcpus=1, ram=256, disk=1),
    Flavor(id="2", name="m1.small", vcpus=1, ram=512, disk=2),
    Flavor(id="3", name="m1.medium", vcpus=2, ram=1024, disk=4),
)
