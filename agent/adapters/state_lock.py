"""One daemon per state dir: an exclusive flock on `<state_dir>/agent.lock`, held for the
process's life. A second daemon on the same state dir would sweep, resume and run the
same jobs as the first, and take each other's guests for orphans."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent.errors import StateDirLocked

LOCK_FILE = "agent.lock"


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StateDirLocked naming the holder. The kernel drops the
        lock when the process dies (kill -9 too), so a stale file never blocks a start."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirLocked(
                f"state dir {self.path.parent} is in use by another compute-agent (pid {holder}"
                f", lock {self.path}): stop it first, or give this one another state_dir") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
