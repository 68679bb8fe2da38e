"""The injection worker's wire: a frame read back is the message written, a frame longer
than the bound is refused (written or read), a stream cut inside a frame is an error (not
a shorter message) while one that ends between frames is a clean end, and requests keep
their binary file contents and secrets across the wire."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from agent.adapters import injector_frames
from agent.adapters.injector_frames import (
    FrameError,
    encode_frame,
    read_frame,
    request_from_wire,
    request_to_wire,
    result_from_wire,
    result_to_wire,
)
from agent.errors import InjectionError
from agent.model.injection import InjectedFile, InjectionRequest, InjectionResult


def trickle(data: bytes):
    """A reader that hands out at most 3 bytes a call, as a pipe may."""
    stream = io.BytesIO(data)
    return lambda n: stream.read(min(n, 3))


def test_frames_read_back_in_order_then_the_stream_ends_cleanly() -> None:
    read = trickle(encode_frame({"op": "inject", "n": 1}) + encode_frame({"op": "close"}))
    assert read_frame(read) == {"op": "inject", "n": 1}
    assert read_frame(read) == {"op": "close"}
    assert read_frame(read) is None


@pytest.mark.parametrize("cut", [2, 4, 9])
def test_a_stream_cut_inside_a_frame_is_an_error(cut: int) -> None:
    data = encode_frame({"op": "warm_up", "bases": {}})
    with pytest.raises(FrameError):
        read_frame(trickle(data[:cut]))


def test_an_oversized_frame_is_refused_before_its_body_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(injector_frames, "MAX_FRAME", 16)
    reads: list[int] = []

    def read(n: int) -> bytes:
        reads.append(n)
        return struct.pack(">I", 17) if len(reads) == 1 else b"x" * n

    with pytest.raises(FrameError, match="exceeds"):
        read_frame(read)
    assert reads == [4]
    with pytest.raises(FrameError, match="exceeds"):
        encode_frame({"data": "x" * 20})


def test_a_frame_that_is_not_a_json_object_is_an_error() -> None:
    with pytest.raises(FrameError):
        read_frame(trickle(struct.pack(">I", 3) + b"[1]"))
    with pytest.raises(FrameError):
        read_frame(trickle(struct.pack(">I", 3) + b"{x}"))


def test_a_request_crosses_the_wire_whole_binary_contents_included() -> None:
    req = InjectionRequest(disk=Path("/i/a/disk"), files=(
        InjectedFile(path="/etc/blob", contents=bytes(range(256))),), root_password_hash="$6$x$y",
        authorized_keys=("ssh-ed25519 AAAA k",), layout_key="/b/base",
        fresh_overlay_of=Path("/b/base"), guest_written=False)
    back = request_from_wire(read_frame(trickle(encode_frame(request_to_wire(req)))) or {})
    assert back == req
    assert back.files[0].contents == bytes(range(256))


def test_results_and_errors_cross_the_wire() -> None:
    ok = InjectionResult(disk=Path("/i/a/disk"), written=("/etc/motd",),
                         backups={"/etc/motd": "/etc/motd.bak"}, password_set=True, seconds=1.5)
    assert result_from_wire(result_to_wire(ok)) == ok
    error = result_from_wire(result_to_wire(InjectionError("no root filesystem")))
    assert isinstance(error, InjectionError) and str(error) == "no root filesystem"
