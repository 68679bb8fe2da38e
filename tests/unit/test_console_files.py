"""The console files adapter: reads only the log's tail, and a missing log or socket is
ConsoleNotAvailable (the API's 404)."""

from pathlib import Path
from uuid import uuid4

import pytest

from agent.adapters.console_files import LocalConsoleFiles
from agent.errors import ConsoleNotAvailable


def files_in(folder: Path) -> LocalConsoleFiles:
    return LocalConsoleFiles(lambda i: folder / f"{i}.sock", lambda i: folder / f"{i}.log")


def test_log_tail_is_the_last_bytes_only(tmp_path: Path) -> None:
    server_id = uuid4()
    (tmp_path / f"{server_id}.log").write_bytes(b"old" * 1000 + b"newest")
    assert files_in(tmp_path).log_tail(server_id, 6) == b"newest"
    assert files_in(tmp_path).log_tail(server_id, 10**6).endswith(b"oldnewest")


def test_no_log_or_no_socket_is_console_not_available(tmp_path: Path) -> None:
    with pytest.raises(ConsoleNotAvailable):
        files_in(tmp_path).log_tail(uuid4(), 10)
    with pytest.raises(ConsoleNotAvailable):
        files_in(tmp_path).socket_path(uuid4())
