"""Keypairs (/os-keypairs), as Nova 2.1 has them: per user, a name unique per user, the
public key only; a generated key's private half is returned to the caller once, never
stored or logged. And the rules for a public key that goes into a guest's
/root/.ssh/authorized_keys (one line, no control characters)."""

from __future__ import annotations

import asyncio
import string
from collections.abc import Callable
from datetime import UTC, datetime

from agent.errors import InvalidInput, KeypairExists, KeypairNotFound, QuotaExceeded
from agent.model.keypair import Keypair, exists_message, not_found_message
from agent.model.requests import Limits, RequestContext
from agent.protocols import SshKeys, Store

# Nova's _validate_new_key_pair: letters, digits, '_', '-' and space.
SAFE_NAME_CHARS = frozenset("_- " + string.digits + string.ascii_letters)
QUOTA_MESSAGE = "Quota exceeded, too many key pairs."  # Nova's 403 for key_pairs


def invalid_keypair(reason: str, field: str) -> InvalidInput:
    return InvalidInput(f"Keypair data is invalid: {reason}", field)


def check_keypair_name(name: str) -> str:
    if not 1 <= len(name) <= 255:
        raise invalid_keypair("Keypair name must be string and between 1 and 255 characters "
                              "long", "name")
    if any(c not in SAFE_NAME_CHARS for c in name):
        raise invalid_keypair("Keypair name contains unsafe characters", "name")
    if name != name.strip():  # Nova's 2.1 schema (parameter_types.name) refuses these
        raise InvalidInput("An invalid 'name' value was provided. The name must be: printable "
                           "characters. Can not start or end with whitespace.", "name")
    return name


def authorized_key_line(public_key: str) -> str:
    """The public key as one authorized_keys line: surrounding whitespace dropped, and
    nothing that would start a second line (or hide one) inside it."""
    line = public_key.strip()
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in line):
        raise invalid_keypair("the public key must be one line without control characters",
                              "public_key")
    return line


class KeypairService:
    def __init__(self, store: Store, keys: SshKeys, limits: Limits,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.keys = keys
        self.limits = limits
        self.now = now
        self._adding = asyncio.Lock()

    def _check_new(self, ctx: RequestContext, name: str) -> None:
        check_keypair_name(name)
        if len(self.store.list_keypairs(ctx.user_id)) >= self.limits.max_total_keypairs:
            raise QuotaExceeded(QUOTA_MESSAGE)

    async def _add(self, ctx: RequestContext, name: str, public_key: str) -> Keypair:
        try:
            fingerprint = self.keys.fingerprint(public_key)
        except ValueError:
            raise invalid_keypair("failed to generate fingerprint", "public_key") from None
        return await self.store.add_keypair(Keypair(user_id=ctx.user_id, name=name,
                                              public_key=public_key, fingerprint=fingerprint,
                                              created_at=self.now()))

    async def import_public_key(self, ctx: RequestContext, name: str, public_key: str) -> Keypair:
        """Keep the caller's public key under `name` (KeypairExists if taken)."""
        async with self._adding:  # the quota checked and the key added, with no turn between
            self._check_new(ctx, name)
            authorized_key_line(public_key)
            return await self._add(ctx, name, public_key)

    async def generate(self, ctx: RequestContext, name: str) -> tuple[Keypair, str]:
        """A new key kept under `name`; its private key, to return once. The key is made
        in a thread (RSA takes 0.1-2 s of CPU; the event loop serves other requests
        meanwhile), then the checks run again with the commit, with no wait in between."""
        self._check_new(ctx, name)
        if self.store.get_keypair(ctx.user_id, name) is not None:  # spare the key's cost
            raise KeypairExists(exists_message(name))
        new = await asyncio.to_thread(self.keys.generate)
        async with self._adding:
            self._check_new(ctx, name)
            return await self._add(ctx, name, new.public_key), new.private_key

    def list(self, ctx: RequestContext) -> list[Keypair]:
        return self.store.list_keypairs(ctx.user_id)

    def get(self, ctx: RequestContext, name: str) -> Keypair:
        found = self.store.get_keypair(ctx.user_id, name)
        if found is None:
            raise KeypairNotFound(not_found_message(ctx.user_id, name))
        return found

    async def delete(self, ctx: RequestContext, name: str) -> None:
        await self.store.delete_keypair(ctx.user_id, name)
