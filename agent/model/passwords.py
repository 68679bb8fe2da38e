"""Admin password policy and generation (as Nova's utils.generate_password does it)."""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Nova's symbol groups: look-alike characters (0/O, 1/l/I) left out.
_DIGITS, _UPPER, _LOWER = "23456789", "ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz"
_SYMBOLS = "!#%+-=@^_~"


class PasswordPolicy(BaseModel):
    """The complexity an admin password must meet (configurable per deployment)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_length: int = Field(default=8, ge=1, le=255)
    max_length: int = Field(default=255, ge=1, le=4096)
    require_lower: bool = True
    require_upper: bool = True
    require_digit: bool = True
    require_symbol: bool = False
    # The length of generated passwords, within [min_length, max_length] (clamped there).
    generated_length: int = Field(default=16, ge=8, le=255)

    @property
    def required_classes(self) -> list[str]:
        """The character sets a password must draw from, one character each at least."""
        wanted = ((self.require_lower, _LOWER), (self.require_upper, _UPPER),
                  (self.require_digit, _DIGITS), (self.require_symbol, _SYMBOLS))
        return [chars for required, chars in wanted if required]

    @model_validator(mode="after")
    def _satisfiable(self) -> PasswordPolicy:
        """Refuse a policy no password can meet: every adminPass would fail it and every
        generated one too (each server would end in ERROR)."""
        if self.min_length > self.max_length:
            raise ValueError(f"password_policy: min_length {self.min_length} is greater than "
                             f"max_length {self.max_length}")
        if len(self.required_classes) > self.max_length:
            raise ValueError(f"password_policy: {len(self.required_classes)} required character "
                             f"classes do not fit in max_length {self.max_length}")
        return self

    @property
    def generated_size(self) -> int:
        """How long a generated password is: generated_length, but never outside the
        policy's bounds, and long enough for one character of each required class."""
        wanted = max(self.generated_length, self.min_length, len(self.required_classes))
        return min(wanted, self.max_length)

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
    """A random password that meets the policy (the validator makes sure one can): one
    character of each required class, the rest from letters and digits, shuffled."""
    chars = [secrets.choice(g) for g in policy.required_classes]
    pool = _DIGITS + _UPPER + _LOWER
    chars += [secrets.choice(pool) for _ in range(policy.generated_size - len(chars))]
    for i in range(len(chars) - 1, 0, -1):  # Fisher-Yates with a CSPRNG
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)
