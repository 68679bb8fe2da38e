"""The real daemon guards its state dir: one daemon per state dir (a second one exits
non-zero naming the holder), and a guest of ours that the store does not know (an older
agent.db restored, a corrupt one moved aside) is quarantined at start-up: its domain and
disk stay, the log says so at error level, `doctor` names it; only a store that says the
server was deleted gets it removed."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.adapters.host_facts import read_host_facts
from agent.adapters.image_catalog import ManifestImageCatalog
from agent.adapters.libvirt_hypervisor import LibvirtHypervisor
from agent.adapters.qemu_img import QemuImgDisks
from agent.adapters.sqlite_store import SqliteStore
from agent.core.guest_layout import InstanceFiles, build_domain_spec
from agent.model.flavor import Flavor
from agent.model.host import decide_virt_type
from agent.model.states import VmState
from tests.conftest import IMAGES_DIR, REPO
from tests.integration.test_store_contract import make_job, make_server
from tests.support.daemon import Daemon, agent_domains, destroy_domains

ADMIN_TOKEN = "tok-admin-0123456789"
ADMIN = f'[[tokens]]\ntoken = "{ADMIN_TOKEN}"\nproject_id = "project-admin"\nuser_id = "root"\nadmin = true\n'
IMAGE_ID = "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"  # the test image, fixed by vm-images/build.py
TINY = Flavor(id="1", name="m1.tiny", vcpus=1, ram=256, disk=1)


@pytest.fixture
def daemon(guest_dir: Path) -> Iterator[Daemon]:
    d = Daemon(guest_dir / "state", extra_config=ADMIN)
    yield d
    d.kill()
    destroy_domains(d.state_dir)


def _run_agent(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(d.config_file), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def _log_events(d: Daemon, event: str) -> list[dict]:
    found = []
    for line in d.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            found.append(entry)
    return found


def test_a_second_daemon_on_the_same_state_dir_exits_non_zero_naming_the_first(daemon: Daemon):
    daemon.start()
    second = _run_agent(daemon, "serve")
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"state dir {daemon.state_dir} is in use by another compute-agent" in second.stderr
    assert f"pid {daemon.proc.pid}" in second.stderr
    with daemon.client() as c:  # the first one serves on, untouched
        assert c.get("/servers").status_code == 200
    daemon.kill()  # kill -9: the kernel drops the lock; the file left behind blocks nothing
    assert (daemon.state_dir / "agent.lock").exists()
    daemon.start()


def _quarantined_gauge(d: Daemon) -> dict[str, float]:
    r = httpx.get(d.url + "/metrics", headers={"X-Auth-Token": ADMIN_TOKEN}, timeout=30)
    assert r.status_code == 200, r.text
    return {s.labels["kind"]: s.value for family in text_string_to_metric_families(r.text)
            for s in family.samples if s.name == "compute_agent_quarantined"}


def _guest_of_ours(state_dir: Path, hv: LibvirtHypervisor) -> tuple[uuid.UUID, InstanceFiles]:
    """A domain as the daemon makes them (our metadata, disk under its instances folder),
    defined through the adapters and left shut off (no CPU spent on a boot)."""
    image = ManifestImageCatalog(IMAGES_DIR, boot_cache=state_dir / "_base").get(IMAGE_ID)
    u = uuid.uuid4()
    files = InstanceFiles(state_dir / "instances", u)
    files.dir.mkdir(mode=0o755)
    base = state_dir / "_base" / f"{image.uuid}.qcow2"
    QemuImgDisks().cache_base(image.disk_file, base)
    QemuImgDisks().create_overlay(base, image.disk_format, files.disk, TINY.disk)
    virt_type = decide_virt_type("auto", read_host_facts()).virt_type
    hv.define(build_domain_spec(u, image, TINY, files, virt_type,
                                metadata={"server_id": str(u), "project_id": "project-alice"}))
    return u, files


async def test_a_guest_the_store_does_not_know_is_quarantined_until_the_store_says_deleted(
        daemon: Daemon) -> None:
    daemon.start()
    assert daemon.stop() == 0
    hv = LibvirtHypervisor("qemu:///system")
    try:
        u, files = _guest_of_ours(daemon.state_dir, hv)
    finally:
        hv.close()
    # The store is lost: moved aside as corrupt; the daemon starts on a fresh one.
    for f in daemon.state_dir.glob("agent.db*"):
        f.rename(f.with_name("corrupt-" + f.name))

    daemon.start()
    assert str(u) in agent_domains(daemon.state_dir)
    assert files.disk.exists()
    quarantined = {(e["kind"], e["level"]) for e in _log_events(daemon, "recovery.quarantined")
                   if e["server_id"] == str(u)}
    assert quarantined == {("domain", "error"), ("instance_dir", "error")}
    assert _quarantined_gauge(daemon) == {"domain": 1, "instance_dir": 1}
    doctor = _run_agent(daemon, "doctor", "--no-guestfs")
    [line] = [li for li in doctor.stdout.splitlines() if "quarantine:" in li]
    assert line.startswith("[warn] quarantine:") and f"domain {u}" in line
    assert str(files.dir) in line

    # A restart does not forget it: quarantined again, still there.
    assert daemon.stop() == 0
    daemon.start()
    assert str(u) in agent_domains(daemon.state_dir) and files.disk.exists()
    assert daemon.stop() == 0

    # The store says the server was deleted (its row kept as a tombstone): removed.
    store = SqliteStore(daemon.state_dir / "agent.db")
    try:
        server = make_server(id=u, project_id="project-alice")
        await store.create_server(server, make_job(u))
        await store.update_server(u, {"vm_state": VmState.DELETED, "task_state": None}, cause="delete")
    finally:
        store.close()
    daemon.start()
    assert str(u) not in agent_domains(daemon.state_dir)
    assert not files.dir.exists()
    assert any(e["server_id"] == str(u) and e["reason"] == "server deleted"
               for e in _log_events(daemon, "recovery.orphan_domain_removed"))
    doctor = _run_agent(daemon, "doctor", "--no-guestfs")
    assert "[ok  ] quarantine:" in doctor.stdout
    assert _quarantined_gauge(daemon) == {"domain": 0, "instance_dir": 0}
