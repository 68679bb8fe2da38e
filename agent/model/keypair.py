"""An SSH keypair as Nova keeps it: per user, named, holding the public half only. The
private half of a generated key is handed to the caller once and never kept."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# Nova's KEYPAIR_TYPE_SSH; x509 keypairs (microversion 2.2) are not offered at 2.1.
SSH = "ssh"


class Keypair(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int = 0  # given by the store (Nova shows its database id)
    user_id: str
    name: str = Field(min_length=1, max_length=255)
    type: str = SSH
    public_key: str
    fingerprint: str  # MD5 of the key blob, colon-separated hex pairs, as Nova computes it
    created_at: datetime


class GeneratedKey(BaseModel):
    """A new key: the OpenSSH public line, and the private key (PEM) to return once."""

    model_config = ConfigDict(frozen=True)

    public_key: str
    private_key: str = Field(repr=False)


def exists_message(name: str) -> str:
    return f"Key pair '{name}' already exists."  # Nova's KeyPairExists


def not_found_message(user_id: str, name: str) -> str:
    return f"Keypair {name} not found for user {user_id}"  # Nova's KeypairNotFound
