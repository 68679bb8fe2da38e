"""Guests' serial consoles in memory (the ConsoleFiles port)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from agent.errors import ConsoleNotAvailable


class FakeConsoleFiles:
    def __init__(self) -> None:
        self.logs: dict[UUID, bytes] = {}
        self.sockets: dict[UUID, Path] = {}
        self.reads: list[int] = []  # max_bytes of each log_tail call

    def socket_path(self, server_id: UUID) -> Path:
        if server_id not in self.sockets:
            raise ConsoleNotAvailable("Guest does not have a console available.")
        return self.sockets[server_id]

    def log_tail(self, server_id: UUID, max_bytes: int) -> bytes:
        self.reads.append(max_bytes)
        if server_id not in self.logs:
            raise ConsoleNotAvailable("Guest does not have a console available.")
        return self.logs[server_id][-max_bytes:]
