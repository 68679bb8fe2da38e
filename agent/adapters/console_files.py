"""Guests' serial consoles as files: QEMU's unix socket and the log virtlogd writes beside it.
Where they are is the core's layout (agent/core/guest_layout.py), passed in by app.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from agent.errors import ConsoleNotAvailable

NO_CONSOLE = "Guest does not have a console available."


class LocalConsoleFiles:
    def __init__(self, socket_of: Callable[[UUID], Path], log_of: Callable[[UUID], Path]) -> None:
        self.socket_of = socket_of
        self.log_of = log_of

    def socket_path(self, server_id: UUID) -> Path:
        path = self.socket_of(server_id)
        if not path.exists():
            raise ConsoleNotAvailable(NO_CONSOLE)
        return path

    def log_tail(self, server_id: UUID, max_bytes: int) -> bytes:
        try:
            with open(self.log_of(server_id), "rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - max_bytes))
                return f.read(max_bytes)
        except FileNotFoundError:
            raise ConsoleNotAvailable(NO_CONSOLE) from None
