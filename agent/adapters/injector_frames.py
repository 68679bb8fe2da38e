"""The injection worker's wire: frames of a 4-byte big-endian length then that many bytes
of JSON, both ways, between the daemon (injector_process) and its worker
(injector_worker). A frame longer than MAX_FRAME is refused: the reader stops there.

Requests carry secrets (file contents, the root password hash): they cross a pipe
between two processes of the agent and are never logged by either side."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

from agent.errors import InjectionError
from agent.model.injection import InjectedFile, InjectionRequest, InjectionResult

MAX_FRAME = 16 * 1024 * 1024  # a batch of 8 requests with their files fits many times over
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The stream is not a frame: truncated, too long or not JSON."""


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def read_frame(read: Callable[[int], bytes]) -> dict[str, Any] | None:
    """The next frame, read with `read(n)` (which may return fewer bytes); None at the end
    of the stream between two frames."""
    header = _read_exact(read, _HEADER.size, at_boundary=True)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = _read_exact(read, size, at_boundary=False) or b""
    try:
        message = json.loads(body)
    except ValueError as e:
        raise FrameError("frame is not JSON") from e
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


def _read_exact(read: Callable[[int], bytes], size: int, *, at_boundary: bool) -> bytes | None:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = read(size - got)
        if not chunk:
            if got == 0 and at_boundary:
                return None
            raise FrameError(f"stream ended {size - got} bytes short of a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# -- the messages' payloads ----------------------------------------------------------------
def request_to_wire(req: InjectionRequest) -> dict[str, Any]:
    """File contents are bytes (any bytes, not only UTF-8): base64 on the wire."""
    wire = req.model_dump(mode="json", exclude={"files"})
    wire["files"] = [{"path": f.path, "contents": base64.b64encode(f.contents).decode()}
                     for f in req.files]
    return wire


def request_from_wire(wire: dict[str, Any]) -> InjectionRequest:
    files = tuple(InjectedFile(path=f["path"], contents=base64.b64decode(f["contents"]))
                  for f in wire.get("files", ()))
    return InjectionRequest.model_validate({**wire, "files": files})


def result_to_wire(result: InjectionResult | InjectionError) -> dict[str, Any]:
    if isinstance(result, InjectionError):
        return {"error": str(result)}
    return {"result": result.model_dump(mode="json")}


def result_from_wire(wire: dict[str, Any]) -> InjectionResult | InjectionError:
    if "error" in wire:
        return InjectionError(str(wire["error"]))
    return InjectionResult.model_validate(wire["result"])
