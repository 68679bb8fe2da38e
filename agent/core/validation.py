"""Checks of request values that any caller (API, CLI) gets. Shapes and types are the
API schema's job; these are the rules of the spec and of the configured limits."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable

import re2

from agent.errors import InvalidInput, QuotaExceeded
from agent.model.flavor import Flavor
from agent.model.image import Image
from agent.model.requests import Limits

MAX_META_BYTES = 255
# A name filter is matched by RE2, in time linear in pattern and name (Python's `re`
# backtracks: `^(a+)+$` against 28 a's and a "!" held the event loop for 19 s). The
# pattern's length and RE2's program memory are bounded too, so compiling one is cheap.
MAX_NAME_PATTERN = 1024
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 1 << 20
_RE2_OPTIONS.log_errors = False  # a bad pattern is the caller's 400, not a line on stderr


# Nova's parameter_types.name: printable characters only (no control, format or
# zero-width characters, no line or paragraph separators), not starting or ending with
# whitespace. Nova builds its regex over the BMP only; astral characters (emoji) are
# accepted here, as their Unicode categories say they are printable.
NAME_RULE = "printable characters. Can not start or end with whitespace."
# Nova's parameter_types.metadata key pattern (the hyphen moved to the end of the class:
# the same characters, in a form every regex engine reads alike).
META_KEY_PATTERN = r"^[a-zA-Z0-9_:. -]{1,255}$"
_META_KEY = re.compile(META_KEY_PATTERN)


def _printable(char: str) -> bool:
    category = unicodedata.category(char)
    return not category.startswith("C") and (not category.startswith("Z") or category == "Zs")


def _edge_ok(char: str) -> bool:
    return _printable(char) and unicodedata.category(char) != "Zs"


def check_name(name: str, field: str = "name") -> str:
    if not name:
        raise InvalidInput(f"Invalid input for field '{field}': must not be empty", field)
    if len(name) > 255:
        raise InvalidInput(f"Invalid input for field '{field}': at most 255 characters", field)
    if not (_edge_ok(name[0]) and _edge_ok(name[-1]) and all(_printable(c) for c in name)):
        raise InvalidInput(f"Invalid input for field/attribute {field}. An invalid '{field}' "
                           f"value was provided. The name must be: {NAME_RULE}", field)
    return name


def check_access_ip(value: str, version: int) -> str:
    """The address in its canonical form (IPv6 compressed, as Nova's IPAddress field
    shows it); "" means none (the API schema refuses "" as Nova's does)."""
    field = f"accessIPv{version}"
    if value == "":
        return ""
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidInput(f"Invalid input for field '{field}': '{value}' is not an IPv{version} "
                           "address", field) from None
    if addr.version != version:
        raise InvalidInput(f"Invalid input for field '{field}': '{value}' is not an IPv{version} "
                           "address", field)
    return str(addr)


def check_metadata_items(items: dict[str, str], field: str = "metadata") -> None:
    """Keys and values at most 255 bytes (UTF-8), keys not empty."""
    for key, value in items.items():
        if not key:
            raise InvalidInput(f"Invalid input for field '{field}': metadata key must not be "
                               "empty", field)
        if not _META_KEY.fullmatch(key):
            raise InvalidInput(f"Invalid input for field '{field}': '{key[:50]}' does not match "
                               f"any of the regexes: '{META_KEY_PATTERN}'", field)
        if len(key.encode()) > MAX_META_BYTES:
            raise InvalidInput(f"Invalid input for field '{field}': metadata key is longer than "
                               f"{MAX_META_BYTES} bytes", field)
        if len(value.encode()) > MAX_META_BYTES:
            raise InvalidInput(f"Invalid input for field '{field}': value of metadata key "
                               f"'{key[:50]}' is longer than {MAX_META_BYTES} bytes", field)


def check_metadata_quota(total: int, limits: Limits) -> None:
    if total > limits.max_server_meta:
        raise QuotaExceeded(f"Quota exceeded for metadata_items: {total} requested, "
                            f"limit is {limits.max_server_meta} (maxServerMeta)")


def check_image_fits(image: Image, flavor: Flavor, field: str) -> None:
    """The flavor is big enough for the image (create, rebuild and resize alike): its RAM,
    and its disk unless the flavor's disk is 0 (sized by the image)."""
    if flavor.disk and image.min_disk > flavor.disk:
        raise InvalidInput("Flavor's disk is too small for requested image.", field)
    if image.min_ram > flavor.ram:
        raise InvalidInput("Flavor's memory is too small for requested image.", field)


def compile_name_filter(pattern: str) -> Callable[[str], object]:
    """A search for `pattern` in a name (truthy when found). RE2 syntax: Python's without
    backreferences and lookaround, which need backtracking; those are a 400."""
    if len(pattern) > MAX_NAME_PATTERN:
        raise InvalidInput(f"Invalid input for query parameter 'name': at most "
                           f"{MAX_NAME_PATTERN} characters", "name")
    try:
        return re2.compile(pattern, _RE2_OPTIONS).search  # type: ignore[no-any-return]
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise InvalidInput(f"Invalid input for query parameter 'name': not a regular expression "
                           f"this API accepts (RE2 syntax, no backreferences or lookaround): "
                           f"{reason[:200]}", "name") from None


def ref_id(ref: str) -> str:
    """imageRef/flavorRef may be an id or a URL ending in the id (older clients)."""
    return ref.rstrip("/").rsplit("/", 1)[-1]
