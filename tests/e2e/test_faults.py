"""Faults of the host under a working daemon, on real guests: libvirtd killed and started
again in the middle of a build, the state dir's filesystem full, and a libguestfs appliance
that cannot launch. Each ends in a true state with a clear fault where one is due, nothing
half-made or leaked, and a daemon that keeps serving.

dnsmasq dying under the daemon is covered by tests/e2e/test_networks.py (the agent starts
another within seconds)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.api.errors import FAULT_NAMES
from agent.core.workflows.create import STEPS as CREATE_STEPS
from tests.conftest import GUEST_SCRATCH
from tests.e2e.conftest import IMAGE_ID
from tests.e2e.test_crash_safety import (
    all_servers,
    assert_no_orphans,
    jobs,
    our_domains,
    post_server,
    wait_jobs_settled,
)
from tests.e2e.test_libvirtd_restart import kill_libvirtd, libvirtd_pid, start_libvirtd
from tests.support.daemon import Daemon, destroy_domains, instance_dirs, query_store

pytestmark = pytest.mark.e2e

BUILD_S = 240  # bound for a build on this busy TCG host
SECRET = "Fault-Secret-Passw0rd"


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short folder QEMU can reach (console socket paths must fit in 107 bytes)."""
    GUEST_SCRATCH.mkdir(mode=0o755, exist_ok=True)
    root = GUEST_SCRATCH / uuid.uuid4().hex[:8]
    root.mkdir(mode=0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_daemon(root: Path, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    d = Daemon(root / "state", env=env)
    try:
        d.start()
        yield d
    finally:
        d.kill()
        destroy_domains(d.state_dir)


def fault_of(server: dict) -> str:
    return (server.get("fault") or {}).get("message", "")


def wait_job_step(d: Daemon, server_id: str, step: str, timeout: float = BUILD_S) -> str:
    """Poll the store until the server's create job has reached `step` (or a later one,
    should a poll miss it) and is still running; the step it is at."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = jobs(d.state_dir, server_id)
        if rows and rows[0]["step"] in CREATE_STEPS[CREATE_STEPS.index(step):]:
            assert rows[0]["status"] == "running", f"missed the moment: {rows}"
            return rows[0]["step"]
        time.sleep(0.02)
    raise AssertionError(f"create of {server_id} never reached {step}: {jobs(d.state_dir)}")


# -- a. libvirtd restarted in the middle of a create ----------------------------------------

@pytest.mark.parametrize("when", ["injected", "domain"])
def test_libvirtd_restart_mid_create_still_ends_active(scratch, when):
    """libvirtd is SIGKILLed and started again right after a create's disk was made and
    injected ("injected": its domain is being defined) or right after its domain was
    defined (its taps plugged): the build
    still completes, the server ends ACTIVE with its domain running, and nothing leaks."""
    if libvirtd_pid() is None or os.path.exists("/run/systemd/system"):
        pytest.skip("libvirtd is not a process this test may restart by hand")
    with running_daemon(scratch) as d:
        with d.client() as api:
            server_id = post_server(api, f"lv-{when}")
        step = wait_job_step(d, server_id, when)
        print(f"libvirtd killed with the create at step {step!r}")
        try:
            kill_libvirtd()
            time.sleep(1.0)  # the daemon's next libvirt call finds it gone
        finally:
            start_libvirtd()
        server = d.wait_status(server_id, {"ACTIVE", "ERROR"}, timeout=BUILD_S)
        assert server["status"] == "ACTIVE", (step, fault_of(server), d.log()[-3000:])
        [job] = wait_jobs_settled(d.state_dir)
        assert (job["status"], job["step"]) == ("succeeded", "running"), job
        assert our_domains(d.state_dir) == {server_id: "running"}
        assert_no_orphans(d)


# -- b. the state dir's filesystem is full ---------------------------------------------------

def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte with one file; its path."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:  # unbuffered: every byte that fits is written, none is pending at close
        for chunk in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0
    return filler


def integrity(state_dir: Path) -> str:
    conn = sqlite3.connect(f"file:{state_dir / 'agent.db'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(mode=0o755, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def assert_clear_fault(r, status: int) -> str:
    """An OpenStack fault body with a message, and no internals in it."""
    assert r.status_code == status, r.text
    [(name, body)] = r.json().items()
    assert name == FAULT_NAMES[status]
    assert body["code"] == status and body["message"], r.text
    assert "Traceback" not in r.text and "sqlite" not in r.text.lower(), r.text
    return body["message"]


def test_full_state_dir_refuses_cleanly_and_recovers(scratch):
    """The state dir (database, base images) and the instances folder are small tmpfs
    mounts. Filled: POST /servers and PUT metadata answer 503 with a clear fault, and
    nothing is half-written (integrity_check ok, no new server, no instance folder). A
    create accepted while the instances folder is full ends ERROR with a fault saying so,
    not a hang, and is deleted cleanly. Freed: a create goes ACTIVE again."""
    state = scratch / "state"
    with tmpfs(state, "96m"), tmpfs(state / "instances", "24m"), running_daemon(scratch) as d:
        with d.client() as api:
            first = post_server(api, "before-full")
            assert d.wait_status(first, {"ACTIVE", "ERROR"}, BUILD_S)["status"] == "ACTIVE"
            wait_jobs_settled(d.state_dir)
            count = len(query_store(d.state_dir, "SELECT id FROM servers"))

            filler = fill(state)
            r = api.post("/servers", json={"server": {"name": "full", "imageRef": IMAGE_ID,
                                                      "flavorRef": "1", "adminPass": SECRET}})
            assert "out of disk space" in assert_clear_fault(r, 503)
            assert SECRET not in r.text
            r = api.put(f"/servers/{first}/metadata", json={"metadata": {"k": "v"}})
            assert "out of disk space" in assert_clear_fault(r, 503)
            assert api.get(f"/servers/{first}").status_code == 200  # reads still work
            assert integrity(d.state_dir) == "ok"
            assert len(query_store(d.state_dir, "SELECT id FROM servers")) == count
            assert instance_dirs(d.state_dir) == {first}
            filler.unlink()

            # the build's own files cannot be written: a clear fault, not a hang
            assert api.delete(f"/servers/{first}").status_code == 204
            d.wait_status(first, {"DELETED"}, 60)
            filler = fill(state / "instances")
            starved = post_server(api, "starved")
            server = d.wait_status(starved, {"ACTIVE", "ERROR"}, BUILD_S)
            assert server["status"] == "ERROR", server
            assert "No space left on device" in fault_of(server), server["fault"]
            filler.unlink()
            assert api.delete(f"/servers/{starved}").status_code == 204
            d.wait_status(starved, {"DELETED"}, 60)

            again = post_server(api, "after-full")
            server = d.wait_status(again, {"ACTIVE", "ERROR"}, BUILD_S)
            assert server["status"] == "ACTIVE", fault_of(server)
            r = api.put(f"/servers/{again}/metadata", json={"metadata": {"k": "v"}})
            assert r.status_code == 200, r.text
        wait_jobs_settled(d.state_dir)
        assert integrity(d.state_dir) == "ok"
        assert_no_orphans(d)


# -- c. the libguestfs appliance cannot launch -----------------------------------------------

def test_appliance_launch_failure_ends_in_error_and_deletes_cleanly(scratch):
    """With an appliance that cannot start (LIBGUESTFS_HV=/bin/false), a create ends ERROR
    with a fault saying the appliance did not start (and not the password), no domain is
    left running with an uninjected password, DELETE removes everything, and the daemon
    keeps serving."""
    with running_daemon(scratch, env={"LIBGUESTFS_HV": "/bin/false"}) as d:
        with d.client() as api:
            r = api.post("/servers", json={"server": {"name": "no-appliance",
                                                      "imageRef": IMAGE_ID, "flavorRef": "1",
                                                      "adminPass": SECRET}})
            assert r.status_code == 202, r.text
            server_id = r.json()["server"]["id"]
            server = d.wait_status(server_id, {"ACTIVE", "ERROR"}, BUILD_S)
            assert server["status"] == "ERROR", server
            assert "appliance did not start" in fault_of(server), server["fault"]
            assert SECRET not in api.get(f"/servers/{server_id}").text
            assert SECRET not in d.log()
            assert our_domains(d.state_dir) == {}
            [job] = wait_jobs_settled(d.state_dir)
            assert job["status"] == "failed" and SECRET not in job["error"]

            assert api.delete(f"/servers/{server_id}").status_code == 204
            d.wait_status(server_id, {"DELETED"}, 60)
            assert api.get("/flavors").status_code == 200  # still serving
            assert d.proc is not None and d.proc.poll() is None
        wait_jobs_settled(d.state_dir)
        assert all_servers(d)[server_id]["status"] == "DELETED"
        assert_no_orphans(d)
