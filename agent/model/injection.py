"""What goes into a guest's disk before its first boot: personality files, the root
password hash and root's SSH public keys. Contents are secrets: they never appear in a
repr, a log or an error."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# Personality files: root:root, read for user and group only (the spec's octal 440).
FILE_MODE = 0o440
DIR_MODE = 0o755
# A locked root password: the password given did not meet the policy, so nobody can log
# in as root until changePassword sets one.
LOCKED_HASH = "!"
# root's SSH keys: modes sshd's StrictModes accepts (owner root, nobody else may write).
ROOT_SSH_DIR = "/root/.ssh"
AUTHORIZED_KEYS = ROOT_SSH_DIR + "/authorized_keys"
SSH_DIR_MODE = 0o700
AUTHORIZED_KEYS_MODE = 0o600


class InjectedFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str  # absolute, normalised
    contents: bytes = Field(repr=False)


class InjectionRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    disk: Path
    disk_format: str = "qcow2"
    files: tuple[InjectedFile, ...] = ()
    root_password_hash: str | None = Field(default=None, repr=False)
    # Public key lines for root's authorized_keys: appended to the file if the image has
    # one (a line already there is not added twice).
    authorized_keys: tuple[str, ...] = ()
    # Disks made from one base share its partition layout: the injector may remember where
    # that base's root filesystem was and skip probing for it (seconds under TCG).
    layout_key: str | None = None
    # Set only when `disk` is a fresh, untouched overlay of this base: the injector may then
    # do the work on an identical spare overlay (one a warm appliance already holds) and
    # rename that over `disk`.
    fresh_overlay_of: Path | None = None
    base_format: str = "qcow2"
    # A guest has run on `disk` (an offline password change): its contents are the
    # tenant's, possibly hostile, so it goes into an appliance of its own, never beside
    # other tenants' disks.
    guest_written: bool = False


def appliance_groups(requests: list[InjectionRequest]) -> list[list[int]]:
    """Indexes of `requests` grouped by the appliance they may share: every disk no guest
    has written in one group (first), each guest-written disk alone."""
    shared = [i for i, r in enumerate(requests) if not r.guest_written]
    alone = [[i] for i, r in enumerate(requests) if r.guest_written]
    return ([shared] if shared else []) + alone


class InjectionResult(BaseModel):
    """What was done on one disk: the backups made (old path -> .bak path)."""

    model_config = ConfigDict(frozen=True)

    disk: Path
    written: tuple[str, ...] = ()
    backups: dict[str, str] = Field(default_factory=dict)
    password_set: bool = False
    keys_added: int = 0  # authorized_keys lines that were not in the file yet
    seconds: float = 0.0
