"""Admin password policy and generation (as Nova's utils.generate_password does it)."""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field

# Nova's symbol groups: look-alike characters (0/O, 1/l/I) left out.
_GROUPS = ("23456789", "ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz")


class PasswordPolicy(BaseModel):
    """The complexity an admin password must meet (configurable per deployment)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_length: int = Field(default=8, ge=1, le=255)
    max_length: int = Field(default=255, ge=1, le=4096)
    require_lower: bool = True
    require_upper: bool = True
    require_digit: bool = True
    require_symbol: bool = False
    generated_length: int = Field(default=16, ge=8, le=255)

    def violations(self, password: str) -> list[str]:
        """What the password lacks, in words that never repeat the password."""
        out = []
        if len(password) < self.min_length:
            out.append(f"at least {self.min_length} characters")
        if len(password) > self.max_length:
            out.append(f"at most {self.max_length} characters")
        if self.require_lower and not any(c.islower() for c in password):
            out.append("a lowercase letter")
        if self.require_upper and not any(c.isupper() for c in password):
            out.append("an uppercase letter")
        if self.require_digit and not any(c.isdigit() for c in password):
            out.append("a digit")
        if self.require_symbol and all(c.isalnum() for c in password):
            out.append("a symbol")
        return out


def generate_password(policy: PasswordPolicy) -> str:
    """A random password with at least one character of each group, so it always meets
    the default policy (and any policy without require_symbol)."""
    length = max(policy.generated_length, policy.min_length, len(_GROUPS))
    chars = [secrets.choice(g) for g in _GROUPS]
    pool = "".join(_GROUPS)
    chars += [secrets.choice(pool) for _ in range(length - len(chars))]
    if policy.require_symbol:
        chars[-1] = secrets.choice("!#%+-=@^_~")
    for i in range(len(chars) - 1, 0, -1):  # Fisher-Yates with a CSPRNG
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)
