"""The spec's personality rules: paths, base64 contents, decoded-size limits, text only."""

from __future__ import annotations

import base64
import binascii

from agent.errors import InvalidInput, QuotaExceeded
from agent.model.image import Image
from agent.model.injection import InjectedFile
from agent.model.requests import Limits, PersonalityFile

MAX_PATH_BYTES = 255
IMAGE_LIMIT_PROPERTY = "max_personality_size"  # an image may lower the limit (bytes)
# Magic numbers of archives and compressed files. bzip2 and tar are checked whole (below):
# their magic is printable text, and a text file may well start with "BZh".
_ARCHIVE_MAGIC = {
    b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz", b"7z\xbc\xaf\x27\x1c": "7z", b"\x28\xb5\x2f\xfd": "zstd",
    b"Rar!\x1a\x07": "rar", b"\x04\x22\x4d\x18": "lz4",
}
# "BZh", a block size digit, then a block's magic (pi) or the end of stream's (sqrt(pi)).
_BZIP2_BLOCK_MAGIC = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
_TAR_BLOCK = 512
_ALLOWED_CONTROLS = {"\t", "\n", "\r", "\f", "\v", "\x1b"}


def normalise_path(path: str, index: int) -> str:
    field = f"personality[{index}].path"
    if "\0" in path:
        raise InvalidInput(f"Invalid input for field '{field}': the path contains NUL", field)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidInput(f"Invalid input for field '{field}': the path is longer than "
                           f"{MAX_PATH_BYTES} bytes", field)
    if not path.startswith("/"):
        raise InvalidInput(f"Invalid input for field '{field}': the path must be absolute", field)
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InvalidInput(f"Invalid input for field '{field}': '..' climbs above /",
                                   field)
            parts.pop()
            continue
        parts.append(part)
    if not parts or path.endswith("/"):
        raise InvalidInput(f"Invalid input for field '{field}': the path must name a file", field)
    return "/" + "/".join(parts)


def _is_bzip2(data: bytes) -> bool:
    return (data[:3] == b"BZh" and data[3:4] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8",
                                                  b"9") and data[4:10] in _BZIP2_BLOCK_MAGIC)


def _is_tar(data: bytes) -> bool:
    """A tar header: "ustar" at 257 and a header checksum that adds up (the sum of the
    512 header bytes with the 8-byte checksum field counted as spaces)."""
    if len(data) < _TAR_BLOCK or data[257:262] != b"ustar":
        return False
    header = data[:_TAR_BLOCK]
    field = header[148:156].replace(b"\0", b" ").strip()
    try:
        recorded = int(field, 8)
    except ValueError:
        return False
    return recorded == sum(header[:148]) + 8 * ord(" ") + sum(header[156:])


def _archive_kind(data: bytes) -> str | None:
    for magic, kind in _ARCHIVE_MAGIC.items():
        if data.startswith(magic):
            return kind
    if _is_bzip2(data):
        return "bzip2"
    if _is_tar(data):
        return "tar"
    return None


def _base64_text(contents: str) -> bytes:
    """The base64 text without the line breaks (and spaces) of MIME-style wrapping, which
    Nova accepts; any other character outside the alphabet stays an error."""
    return "".join(contents.split()).encode("ascii")


def decode_contents(contents: str, index: int, limit: int) -> bytes:
    field = f"personality[{index}].contents"
    try:
        data = base64.b64decode(_base64_text(contents), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidInput(f"Invalid input for field '{field}': not valid base64", field) from None
    if len(data) > limit:
        raise QuotaExceeded(f"Personality content limit exceeded: file {index} is {len(data)} "
                            f"bytes decoded, limit is {limit} (maxPersonalitySize)")
    kind = _archive_kind(data)
    if kind:
        raise InvalidInput(f"Invalid input for field '{field}': a {kind} archive; only text "
                           "files can be injected", field)
    if b"\0" in data:
        raise InvalidInput(f"Invalid input for field '{field}': binary data (NUL bytes); only "
                           "text files can be injected", field)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"Invalid input for field '{field}': not UTF-8 text; only text files "
                           "can be injected", field) from None
    if any(ord(c) < 32 and c not in _ALLOWED_CONTROLS for c in text):
        raise InvalidInput(f"Invalid input for field '{field}': binary data (control "
                           "characters); only text files can be injected", field)
    return data


def size_limit(limits: Limits, image: Image) -> int:
    """The deployment's limit, lowered (never raised) by the image's own property."""
    raw = image.properties.get(IMAGE_LIMIT_PROPERTY)
    try:
        own = int(raw) if raw is not None else None
    except ValueError:
        own = None
    return min(limits.max_personality_size, own) if own is not None and own >= 0 \
        else limits.max_personality_size


def check_personality(files: tuple[PersonalityFile, ...], limits: Limits,
                      image: Image) -> tuple[InjectedFile, ...]:
    """Every rule of the spec, in order; the first broken one is the error."""
    if len(files) > limits.max_personality:
        raise QuotaExceeded(f"Personality file limit exceeded: {len(files)} files, limit is "
                            f"{limits.max_personality} (maxPersonality)")
    limit = size_limit(limits, image)
    out: list[InjectedFile] = []
    seen: set[str] = set()
    for i, f in enumerate(files):
        path = normalise_path(f.path, i)
        if path in seen:
            raise InvalidInput(f"Invalid input for field 'personality[{i}].path': {path} is "
                               "given twice", f"personality[{i}].path")
        seen.add(path)
        out.append(InjectedFile(path=path, contents=decode_contents(
            f.contents.get_secret_value(), i, limit)))
    return tuple(out)
