"""`compute-agent server ...` acts on servers through the running daemon's socket:
create --wait shows progress and ends ACTIVE, list/show/set work, delete --wait ends it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import IMAGE_ID
from tests.support.daemon import Daemon, destroy_domains


@pytest.fixture
def local_daemon(guest_dir):
    d = Daemon(guest_dir / "state", extra_config='unix_socket_project = "project-alice"')
    d.start()
    yield d
    d.kill()
    destroy_domains(d.state_dir)


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(daemon.config_file),
                           "server", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_create_list_show_set_delete_through_the_socket(local_daemon):
    done = cli(local_daemon, "create", "cli-1", "--image", IMAGE_ID, "--flavor", "1",
               "--property", "role=web", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    server_id = done.stdout.split()[1]
    assert "100% ACTIVE" in done.stdout
    assert "(shown once)" in done.stdout

    listed = cli(local_daemon, "list")
    assert server_id in listed.stdout and "ACTIVE" in listed.stdout

    shown = cli(local_daemon, "set", server_id, "--name", "cli-renamed", "--property", "tier=1")
    assert shown.returncode == 0, shown.stderr
    assert "cli-renamed" in shown.stdout and "'tier': '1'" in shown.stdout
    assert "'role': 'web'" in shown.stdout

    gone = cli(local_daemon, "delete", server_id, "--wait")
    assert gone.returncode == 0, gone.stderr
    with local_daemon.client() as api:  # same project as the socket's default
        assert api.get(f"/servers/{server_id}").status_code == 404


def test_errors_are_one_clear_line_and_exit_non_zero(local_daemon):
    done = cli(local_daemon, "show", "00000000-0000-0000-0000-000000000000")
    assert done.returncode == 1
    assert done.stderr.strip() == ("compute-agent: HTTP 404: Instance "
                                   "00000000-0000-0000-0000-000000000000 could not be found.")
    done = cli(local_daemon, "create", "x", "--image", IMAGE_ID, "--flavor", "nope")
    assert done.returncode == 1 and "flavorRef" in done.stderr
