"""A real fleet (issue 12): `compute-agent controller serve` and two real agents on the
real broker (a vhost of the test's own) and libvirtd. Two servers of one project created
at the controller are spread over both hosts, built as real guests by their agents, shown
ACTIVE at the controller with two hostIds, then deleted: nothing is left on either host."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import IMAGE_ID
from tests.integration.test_amqp_bus import broker_running  # noqa: F401 - autouse
from tests.integration.test_fleet_controller import vhost  # noqa: F401 - fixture
from tests.support.daemon import agent_domains
from tests.support.fleet import ADMIN_TOKEN, ADMIN_TOKEN_TOML, Fleet, hosts_up, until

pytestmark = pytest.mark.e2e

BUILD_S = 600  # two guests under TCG on a shared 2-CPU machine: generous, bounded


def _traversable(folder: Path) -> Path:
    folder.chmod(0o755)  # QEMU and dnsmasq run unprivileged below the agents' state dirs
    return folder


def test_two_agents_build_a_projects_servers_on_two_hosts_and_delete_them(vhost):  # noqa: F811
    with tempfile.TemporaryDirectory(prefix="fl-", dir="/tmp") as tmp, Fleet(
            _traversable(Path(tmp)), agents=2, vhost=vhost, heartbeat_s=2,
            controller_extra=ADMIN_TOKEN_TOML) as fleet:
        ctl = fleet.controller
        admin = httpx.Client(base_url=ctl.url + "/v2.1", timeout=30,
                             headers={"X-Auth-Token": ADMIN_TOKEN})
        with admin, ctl.client() as alice:
            until("both hosts up at the controller", lambda: hosts_up(admin) == set(fleet.hosts), 120)
            r = alice.post("/servers", json={"server": {
                "name": "web", "imageRef": IMAGE_ID, "flavorRef": "1", "min_count": 2,
                "return_reservation_id": True}})
            assert r.status_code == 202, r.text
            reservation = r.json()["reservation_id"]
            ids = [s["id"] for s in alice.get(f"/servers?reservation_id={reservation}")
                   .json()["servers"]]
            assert len(ids) == 2
            servers = [ctl.wait_status(i, {"ACTIVE", "ERROR"}, timeout=BUILD_S) for i in ids]
            assert [s["status"] for s in servers] == ["ACTIVE", "ACTIVE"], servers
            hosts = [admin.get(f"/servers/{i}").json()["server"]["OS-EXT-SRV-ATTR:host"]
                     for i in ids]
            assert sorted(hosts) == sorted(fleet.hosts)  # one each: the project spread
            assert servers[0]["hostId"] != servers[1]["hostId"]
            for host, server_id in zip(hosts, ids, strict=True):
                domains = agent_domains(fleet.agents[host].state_dir)
                assert list(domains) == [server_id] and domains[server_id] == "running"

            for server_id in ids:
                assert alice.delete(f"/servers/{server_id}").status_code == 204
            for server_id in ids:
                ctl.wait_status(server_id, {"DELETED"}, timeout=BUILD_S)
            for host in fleet.hosts:
                assert agent_domains(fleet.agents[host].state_dir) == {}
            assert admin.get("/os-hypervisors/statistics").json()[
                "hypervisor_statistics"]["running_vms"] == 0
