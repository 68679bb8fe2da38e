"""The API's unix socket is guarded by its file mode and group (api_socket_mode,
api_socket_group): the daemon creates it with exactly that mode and group, an unprivileged
process outside the group cannot connect (EACCES), and one in the group can and is served.

The group is made for the test (groupadd) and removed afterwards; the other processes run
as `nobody` through runuser, once with the test group as their group."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e

# Connects to the socket and asks GET /; prints "EACCES" or the status line.
PROBE = """
import errno, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno)); sys.exit(0)
s.sendall(b"GET / HTTP/1.0\\r\\nHost: agent\\r\\n\\r\\n")
print(s.makefile("rb").readline().decode().strip())
"""


@pytest.fixture
def group() -> Iterator[str]:
    name = f"catest{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], check=False)


def probe_as_nobody(socket_path: Path, group: str | None = None) -> str:
    cmd = ["runuser", "-u", "nobody", *(["-g", group] if group else []), "--",
           "/usr/bin/python3", "-I", "-c", PROBE, str(socket_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_unix_socket_has_configured_mode_and_group_and_only_the_group_connects(
        guest_dir: Path, group: str):
    """Mode 0660 and the configured group on the socket; `nobody` outside the group gets
    EACCES on connect, `nobody` with the group as its group gets an answer."""
    gid = int(subprocess.run(["getent", "group", group], capture_output=True, text=True,
                             check=True).stdout.split(":")[2])
    daemon = Daemon(guest_dir / "state",
                    extra_config=f'api_socket_mode = 0o660\napi_socket_group = "{group}"\n')
    try:
        daemon.start()
        sock = daemon.state_dir / "api.sock"
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, gid)
        assert (os.stat(sock.parent).st_mode & 0o005) == 0o005  # others may reach the folder:
        # so the refusal below is the socket's own mode, not a folder they cannot enter
        assert probe_as_nobody(sock) == "EACCES"
        assert probe_as_nobody(sock, group).startswith("HTTP/1.1 200"), daemon.log()[-2000:]
    finally:
        daemon.kill()
