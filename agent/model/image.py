"""Images: what the agent boots, as described by a manifest next to the disk."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Image(BaseModel):
    """A bootable image. Paths are absolute once loaded from the manifest's folder."""

    model_config = ConfigDict(frozen=True)

    uuid: UUID
    name: str
    disk_file: Path
    disk_format: str = "qcow2"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    min_disk: int = Field(default=0, ge=0, description="GiB")
    min_ram: int = Field(default=0, ge=0, description="MiB")
    properties: dict[str, str] = Field(default_factory=dict)
