"""Validated server-action requests the core acts on, independent of the HTTP shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr

from agent.model.requests import PersonalityFile


class RebuildServer(BaseModel):
    """Rebuild: a fresh disk from `image_ref` (the same image or another one) with new
    personality files, a new (or generated) admin password and the server's key (or the
    one named) in root's authorized_keys; name and metadata, when given, replace the
    server's."""

    model_config = ConfigDict(frozen=True)

    image_ref: str
    admin_pass: SecretStr | None = None
    personality: tuple[PersonalityFile, ...] = ()
    name: str | None = None
    metadata: dict[str, str] | None = None
    access_ipv4: str | None = None
    access_ipv6: str | None = None
    # Microversion 2.54's rebuild key_name, offered at 2.1: a keypair's name replaces the
    # server's key, None removes it; key_name_given False keeps the server's key.
    key_name: str | None = None
    key_name_given: bool = False
