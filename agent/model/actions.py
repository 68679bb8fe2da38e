"""Validated server-action requests the core acts on, independent of the HTTP shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr

from agent.model.requests import PersonalityFile


class RebuildServer(BaseModel):
    """Rebuild: a fresh disk from `image_ref` (the same image or another one) with new
    personality files and a new (or generated) admin password; name and metadata, when
    given, replace the server's."""

    model_config = ConfigDict(frozen=True)

    image_ref: str
    admin_pass: SecretStr | None = None
    personality: tuple[PersonalityFile, ...] = ()
    name: str | None = None
    metadata: dict[str, str] | None = None
    access_ipv4: str | None = None
    access_ipv6: str | None = None
