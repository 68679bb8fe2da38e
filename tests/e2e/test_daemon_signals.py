"""SIGHUP reloads tokens without a restart; SIGTERM stops the agent in bounds and the
guests keep running (an agent restart never touches them)."""

from __future__ import annotations

import signal
import time

import httpx

from tests.e2e.conftest import IMAGE_ID
from tests.support.daemon import agent_domains


def test_sighup_reloads_tokens_live(daemon):
    new = "tok-carol-0123456789"
    assert httpx.get(f"{daemon.url}/v2.1/servers", headers={"X-Auth-Token": new}).status_code == 401
    daemon.config_file.write_text(daemon.config_file.read_text() + (
        f'\n[[tokens]]\ntoken = "{new}"\nproject_id = "project-carol"\nuser_id = "carol"\n'))
    pid = daemon.proc.pid
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = httpx.get(f"{daemon.url}/v2.1/servers", headers={"X-Auth-Token": new})
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200
    assert daemon.proc.poll() is None and daemon.proc.pid == pid
    assert new not in daemon.log()


def test_sigterm_stops_the_agent_and_guests_keep_running(daemon):
    with daemon.client() as api:
        created = api.post("/servers", json={"server": {"name": "keep", "imageRef": IMAGE_ID,
                                                        "flavorRef": "1"}}).json()["server"]
    daemon.wait_status(created["id"], {"ACTIVE"}, timeout=240)
    started = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    assert time.monotonic() - started < 30
    assert agent_domains(daemon.state_dir) == {created["id"]: "running"}
    daemon.start()
    server = daemon.wait_status(created["id"], {"ACTIVE"}, timeout=30)
    assert server["OS-EXT-STS:power_state"] == 1
