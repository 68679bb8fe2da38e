"""Images: what the agent boots, as described by a manifest next to the disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Glance's image property for "the image runs the QEMU guest agent" (Nova reads it too).
GUEST_AGENT_PROPERTY = "hw_qemu_guest_agent"
# What Nova's FlexibleBooleanField (oslo strutils.bool_from_string) takes as true;
# anything else ("no", "false", "", a typo) is false.
_TRUE_WORDS = frozenset({"1", "t", "true", "on", "y", "yes"})


def flexible_bool(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE_WORDS


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
    size: int = Field(default=0, ge=0, description="bytes of the disk file (0: unknown)")
    properties: dict[str, str] = Field(default_factory=dict)
    qemu_guest_agent: bool = Field(
        default=False, description=f"the guest runs the QEMU guest agent; from the "
                                   f"`{GUEST_AGENT_PROPERTY}` property unless given")

    @model_validator(mode="before")
    @classmethod
    def _guest_agent_from_properties(cls, data: Any) -> Any:
        if isinstance(data, dict) and "qemu_guest_agent" not in data:
            props = data.get("properties") or {}
            if isinstance(props, dict):
                return {**data, "qemu_guest_agent": flexible_bool(props.get(GUEST_AGENT_PROPERTY))}
        return data
