"""One daemon per state dir: the lock is exclusive, names its holder, and is free again
once released (the kernel also frees it when the holder dies)."""

from __future__ import annotations

import os

import pytest

from agent.adapters.state_lock import LOCK_FILE, StateDirLock
from agent.errors import StateDirLocked


def test_a_second_holder_is_refused_with_the_first_ones_pid_until_it_releases(tmp_path):
    first = StateDirLock(tmp_path)
    first.acquire()
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (tmp_path / LOCK_FILE).stat().st_mode & 0o077 == 0
    with pytest.raises(StateDirLocked, match=rf"state dir {tmp_path} is in use by another "
                                             rf"compute-agent \(pid {os.getpid()}"):
        StateDirLock(tmp_path).acquire()
    first.release()
    second = StateDirLock(tmp_path)
    second.acquire()  # a lock file left behind blocks nothing
    second.release()
