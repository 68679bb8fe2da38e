"""A network spanning two hosts (issue 12), with a real controller and two real agents on
the real broker and libvirtd: each agent's bridge reaches one test switch through its
uplink (a veth), so the two bridges are one L2 segment as on two real hosts. Agent 1 is
the gateway host; agent 2 holds only its host_address (/32). Two guests of one project,
one per host, get distinct addresses from the controller's IPAM by DHCP (each from its
own host's dnsmasq) and ping each other across the hosts.

Test traffic rule (docs/host-notes.md): the switch and the bridges have no other uplink,
the host forwards nothing; the only traffic is between the two guests and our dnsmasqs,
pings bounded (3 packets, 20 s). Everything (domains, taps, bridges, veths, dnsmasq, state
dirs) goes on the way out, also when the test fails (Fleet.stop, the temporary dir)."""

from __future__ import annotations

import os
import tempfile
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import IMAGE_ID
from tests.e2e.test_networks import wait_markers
from tests.integration.test_amqp_bus import broker_running  # noqa: F401 - autouse
from tests.integration.test_fleet_controller import vhost  # noqa: F401 - fixture
from tests.support.console import SerialConsole
from tests.support.fleet import ADMIN_TOKEN, ADMIN_TOKEN_TOML, Fleet, FleetNetwork, hosts_up, until

pytestmark = pytest.mark.e2e

BUILD_S = 600  # two guests under TCG on a shared 2-CPU machine: generous, bounded
# 3 packets, 20 s at most, from inside the guest (busybox ping)
GUEST_PING = "ping -c 3 -W 5 -w 20 {}"


def _console(fleet: Fleet, host: str, server_id: str) -> SerialConsole:
    d = fleet.agents[host].state_dir / "instances" / server_id
    return SerialConsole(d / "console.sock", d / "console.log")


def test_two_guests_on_two_hosts_get_the_controllers_addresses_and_ping_each_other(vhost):  # noqa: F811
    cidr = IPv4Network(f"10.213.{200 + os.urandom(1)[0] % 50}.0/24")  # not test_networks' range
    net = FleetNetwork("span", cidr, segment=True)
    with tempfile.TemporaryDirectory(prefix="fn-", dir="/tmp") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # QEMU and dnsmasq run unprivileged below the agents' state dirs
        with Fleet(base, agents=2, networks=(net,), vhost=vhost, heartbeat_s=2,
                   controller_extra=ADMIN_TOKEN_TOML) as fleet:
            ctl = fleet.controller
            admin = httpx.Client(base_url=ctl.url + "/v2.1", timeout=30,
                                 headers={"X-Auth-Token": ADMIN_TOKEN})
            with admin, ctl.client() as alice:
                until("both hosts up at the controller", lambda: hosts_up(admin) == set(fleet.hosts), 120)
                created = []
                for name in ("left", "right"):  # the project's second server: the other host
                    r = alice.post("/servers", json={"server": {
                        "name": name, "imageRef": IMAGE_ID, "flavorRef": "1",
                        "networks": [{"uuid": str(net.id)}]}})
                    assert r.status_code == 202, r.text
                    created.append(r.json()["server"])
                servers = [ctl.wait_status(c["id"], {"ACTIVE", "ERROR"}, timeout=BUILD_S)
                           for c in created]
                assert [s["status"] for s in servers] == ["ACTIVE", "ACTIVE"], servers
                hosts = [admin.get(f"/servers/{c['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"]
                         for c in created]
                assert sorted(hosts) == sorted(fleet.hosts)  # one guest on each host

            nics = [s["addresses"][net.name][0] for s in servers]
            addresses = [nic["addr"] for nic in nics]
            assert len(set(addresses)) == 2, addresses  # the controller never gives one twice
            reserved = {str(cidr[1]), net.host_address(2)}  # the gateway, host 2's own
            assert all(IPv4Address(a) in cidr and a not in reserved for a in addresses), addresses

            for c, host, nic, other in zip(created, hosts, nics, reversed(addresses), strict=True):
                assert other.startswith("10.213."), other  # test pings stay in our range
                mac = nic["OS-EXT-IPS-MAC:mac_addr"]
                with _console(fleet, host, c["id"]) as con:
                    # its own address, by DHCP from its own host's dnsmasq
                    assert wait_markers(con, {mac}, timeout=BUILD_S) == {mac: f"{nic['addr']}/24"}
                    con.login("root", c["adminPass"])
                    rc, out = con.run(GUEST_PING.format(other), timeout=60)
                    assert rc == 0 and "3 packets received" in out, out  # across the hosts

            # Each host's dnsmasq leased its own guest only and ignored the other's MAC.
            for host, nic in zip(hosts, nics, strict=True):
                log = (fleet.agents[host].state_dir / "dhcp" / str(net.id) / "dnsmasq.log").read_text()
                others = [n["OS-EXT-IPS-MAC:mac_addr"] for n in nics if n is not nic]
                assert f"{nic['addr']} {nic['OS-EXT-IPS-MAC:mac_addr']}" in log, log
                assert all("DHCPOFFER" not in line for line in log.splitlines()
                           if any(m in line for m in others)), log

            with ctl.client() as alice:
                for c in created:
                    assert alice.delete(f"/servers/{c['id']}").status_code == 204
                for c in created:
                    ctl.wait_status(c["id"], {"DELETED"}, timeout=BUILD_S)
