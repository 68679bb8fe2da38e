"""A guest's serial console: what it printed (os-getConsoleOutput) and where to attach.

QEMU serves the serial port on a unix socket (one client at a time) and virtlogd copies
everything the guest prints to `console.log` beside it (libvirt `<serial type='unix'>`
with `<log file=... append='off'/>`: the log restarts with each QEMU start, as Nova's
console.log does)."""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

from agent.core.guest_layout import InstanceFiles
from agent.protocols import ConsoleFiles

# Nova's libvirt driver reads at most the last 100 KiB of the log (MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024
# Nova drops these from the output (control characters but tab and newline).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")


def tail_lines(text: str, length: int | None) -> str:
    """The last `length` lines as Nova's compute manager cuts them (split on newlines,
    so output ending in a newline counts an empty last line); None or -1: all of it."""
    if length is None or length == -1:
        return text
    if length <= 0:
        return ""
    return "\n".join(text.split("\n")[-length:])


def console_socket(instances_dir: Path, server_id: UUID) -> Path:
    return InstanceFiles(instances_dir, server_id).console_socket


def console_log(instances_dir: Path, server_id: UUID) -> Path:
    return InstanceFiles(instances_dir, server_id).console_log


class Consoles:
    """What the API offers of a guest's serial console; ConsoleNotAvailable (404) when
    the guest has none."""

    def __init__(self, files: ConsoleFiles) -> None:
        self.files = files

    def socket_path(self, server_id: UUID) -> Path:
        return self.files.socket_path(server_id)

    def output(self, server_id: UUID, length: int | None) -> str:
        """The tail of the console log, as os-getConsoleOutput answers it."""
        data = self.files.log_tail(server_id, MAX_CONSOLE_BYTES)
        return _CONTROL.sub("", tail_lines(data.decode("utf-8", "replace"), length))
