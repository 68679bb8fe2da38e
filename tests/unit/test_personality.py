"""The spec's personality rules: absolute normalised paths of at most 255 bytes, base64
contents whose *decoded* size is limited, text only, per-image limits on top."""

from __future__ import annotations

import base64
import io
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest

from agent.core.personality import check_personality, decode_contents, normalise_path
from agent.errors import InvalidInput, QuotaExceeded
from agent.model.image import Image
from agent.model.requests import Limits, PersonalityFile

IMAGE = Image(uuid=uuid.uuid4(), name="img", disk_file=Path("/img/disk.qcow2"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def files(*pairs: tuple[str, bytes]) -> tuple[PersonalityFile, ...]:
    return tuple(PersonalityFile(path=p, contents=b64(c)) for p, c in pairs)


@pytest.mark.parametrize("given,expected", [
    ("/etc/motd", "/etc/motd"), ("//etc/./motd", "/etc/motd"), ("/etc/x/../motd", "/etc/motd"),
    ("/a b/ü.txt", "/a b/ü.txt"),
])
def test_paths_are_normalised(given, expected):
    assert normalise_path(given, 0) == expected


@pytest.mark.parametrize("path,words", [
    ("etc/motd", "absolute"), ("/../etc/passwd", "climbs"), ("/etc/../../x", "climbs"),
    ("/etc/\0x", "NUL"), ("/", "name a file"), ("/etc/", "name a file"),
    ("/" + "ü" * 128, "255 bytes"),
])
def test_bad_paths_are_refused_naming_the_field(path, words):
    with pytest.raises(InvalidInput, match=words) as e:
        normalise_path(path, 2)
    assert e.value.field == "personality[2].path"


def test_path_of_exactly_255_bytes_is_fine():
    assert normalise_path("/" + "a" * 254, 0)


def test_the_limit_counts_decoded_bytes_not_base64_characters():
    data = b"x" * 100  # 136 base64 characters
    assert decode_contents(b64(data), 0, 100) == data
    with pytest.raises(QuotaExceeded, match="101 bytes decoded, limit is 100"):
        decode_contents(b64(data + b"x"), 0, 100)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


@pytest.mark.parametrize("data,words", [
    (_zip(), "zip archive"), (b"\x1f\x8b\x08\x00rest", "gzip archive"), (_tar(), "tar archive"),
    (b"BZh91AY&SY", "bzip2 archive"), (b"text\0more", "NUL"), (b"\xff\xfe\x00", "NUL"),
    (b"caf\xe9", "not UTF-8"), (b"bell\x07", "control characters"),
])
def test_only_text_files_are_accepted(data, words):
    with pytest.raises(InvalidInput, match=words):
        decode_contents(b64(data), 0, 1 << 20)


def test_text_with_tabs_newlines_and_unicode_is_fine():
    data = "line one\n\tindented\r\nünïcødé ✓\n".encode()
    assert decode_contents(b64(data), 0, 1 << 20) == data


def test_mime_style_line_wrapped_base64_is_accepted_as_nova_accepts_it():
    data = ("line of text " * 20).encode()
    wrapped = base64.encodebytes(data).decode()  # 76-character lines, "\n" after each
    assert "\n" in wrapped.strip()
    assert decode_contents(wrapped, 0, 1 << 20) == data
    assert decode_contents(wrapped.replace("\n", "\r\n"), 0, 1 << 20) == data


@pytest.mark.parametrize("data", [
    b"BZh is how this note starts, and it is plain text\n",
    b"BZh91 but no block magic follows\n",
    ("x" * 257 + "ustar" + " text goes on " * 30).encode(),
    ("x" * 257 + "ustar  " + "y" * 300).encode(),  # GNU tar's magic, but no valid header
])
def test_text_that_merely_looks_like_an_archive_is_text(data: bytes):
    assert decode_contents(b64(data), 0, 1 << 20) == data


def test_invalid_base64_is_a_bad_request():
    with pytest.raises(InvalidInput, match="not valid base64") as e:
        decode_contents("not base64!!", 1, 100)
    assert e.value.field == "personality[1].contents"


def test_too_many_files_is_over_the_quota():
    with pytest.raises(QuotaExceeded, match="maxPersonality"):
        check_personality(files(*[(f"/f{i}", b"x") for i in range(6)]), Limits(), IMAGE)


def test_an_image_may_lower_the_limit_but_not_raise_it():
    small = IMAGE.model_copy(update={"properties": {"max_personality_size": "4"}})
    with pytest.raises(QuotaExceeded, match="limit is 4"):
        check_personality(files(("/a", b"12345")), Limits(), small)
    big = IMAGE.model_copy(update={"properties": {"max_personality_size": "99999"}})
    with pytest.raises(QuotaExceeded, match="limit is 10"):
        check_personality(files(("/a", b"x" * 11)), Limits(max_personality_size=10), big)


def test_the_same_path_twice_is_refused():
    with pytest.raises(InvalidInput, match="given twice"):
        check_personality(files(("/etc/motd", b"a"), ("/etc/./motd", b"b")), Limits(), IMAGE)


def test_valid_files_come_back_decoded_with_normalised_paths():
    out = check_personality(files(("/etc//motd", b"hi\n"), ("/root/.ssh/x", b"k")), Limits(), IMAGE)
    assert [(f.path, f.contents) for f in out] == [("/etc/motd", b"hi\n"), ("/root/.ssh/x", b"k")]
    assert "hi" not in repr(out)
