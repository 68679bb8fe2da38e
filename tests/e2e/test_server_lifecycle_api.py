"""Through the real daemon and the Compute API: a create becomes a running guest under
libvirt with progress seen during BUILD, and a delete removes domain and disk and leaves
the server listed as DELETED under changes-since."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.conftest import IMAGE_ID
from tests.support.daemon import agent_domains, instance_dirs


def test_create_to_active_real_guest_then_delete(daemon):
    with daemon.client() as api:
        r = api.post("/servers", json={"server": {"name": "e2e-1", "imageRef": IMAGE_ID,
                                                  "flavorRef": "1", "metadata": {"role": "web"}}})
        assert r.status_code == 202, r.text
        created = r.json()["server"]
        assert r.headers["Location"].endswith(f"/servers/{created['id']}")
        assert len(created["adminPass"]) >= 8

        server = daemon.wait_status(created["id"], {"ACTIVE", "ERROR"})
        assert server["status"] == "ACTIVE", server.get("fault")
        progress_during_build = [p for s, p in server["_seen"] if s == "BUILD"]
        assert progress_during_build, "never saw BUILD"
        assert server["progress"] == 100
        assert server["OS-EXT-STS:power_state"] == 1
        assert created["adminPass"] not in json.dumps(server)

        # libvirt itself says the guest runs, with our uuid and the flavor's memory
        domains = agent_domains(daemon.state_dir)
        assert domains == {created["id"]: "running"}
        info = subprocess.run(["virsh", "dominfo", created["id"]], capture_output=True,
                              text=True, check=True).stdout
        assert "262144 KiB" in info  # m1.tiny: 256 MiB
        disk = daemon.state_dir / "instances" / created["id"] / "disk.qcow2"
        assert disk.exists()

        assert api.delete(f"/servers/{created['id']}").status_code == 204
        daemon.wait_status(created["id"], {"DELETED"})
        assert agent_domains(daemon.state_dir) == {}
        assert not disk.exists() and instance_dirs(daemon.state_dir) == set()

        listed = api.get("/servers/detail", params={"changes-since": "2000-01-01T00:00:00Z"})
        [gone] = [s for s in listed.json()["servers"] if s["id"] == created["id"]]
        assert gone["status"] == "DELETED"
        assert api.get("/servers").json()["servers"] == []


def test_progress_values_only_grow_and_stay_in_range(daemon):
    with daemon.client() as api:
        created = api.post("/servers", json={"server": {"name": "e2e-2", "imageRef": IMAGE_ID,
                                                        "flavorRef": "1"}}).json()["server"]
    server = daemon.wait_status(created["id"], {"ACTIVE", "ERROR"})
    values = [p for _, p in server["_seen"]]
    assert values == sorted(values)
    assert all(0 <= p <= 100 for p in values)
