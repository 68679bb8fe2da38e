"""The spec's "Server networks" and "Server access addresses", in real guests: a server on
two networks (a requested fixed IP on one, a pre-created port on the other) whose guest
gets exactly those addresses by DHCP and answers ping at both from test namespaces; access
IPs stored and updated but bound to no interface; leases, taps and the agent's ports gone
after delete; taps lost to a "host reboot" re-plugged at start-up; dnsmasq revived.

Test traffic rule (docs/host-notes.md): the bridges have no uplink and the host does no
forwarding for them; the only traffic is between the guest, our dnsmasq and namespaces made
here, with pings bounded (3 packets, 10 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from agent.adapters.nft_guard import NftPortGuard
from agent.model.network import Network
from tests.e2e.conftest import IMAGE_ID
from tests.support.console import SerialConsole
from tests.support.daemon import Daemon, agent_domains, destroy_domains
from tests.support.netns import TestNet, dnsmasq_pids_under, kill_dnsmasq_under

pytestmark = pytest.mark.e2e

ACCESS = {"accessIPv4": "203.0.113.10", "accessIPv6": "2001:db8::10"}  # documentation ranges
UPDATED = {"accessIPv4": "203.0.113.11", "accessIPv6": "2001:db8::11"}


@dataclass
class Env:
    daemon: Daemon
    testnet: TestNet
    a: Network
    b: Network

    def console(self, server_id: str) -> SerialConsole:
        d = self.daemon.state_dir / "instances" / server_id
        return SerialConsole(d / "console.sock", d / "console.log")

    def dhcp_file(self, network: Network, name: str) -> str:
        path = self.daemon.state_dir / "dhcp" / str(network.id) / name
        return path.read_text() if path.exists() else ""


def network_toml(n: Network) -> str:
    return (f'[[networks]]\nid = "{n.id}"\nname = "{n.name}"\nbridge = "{n.bridge}"\n'
            f'cidr = "{n.cidr}"\nmtu = {n.mtu}\n')


@pytest.fixture
def env(guest_dir: Path) -> Iterator[Env]:
    testnet = TestNet()
    octet = 100 + int(testnet.tag, 16) % 100  # two runs at once do not share a subnet
    a = testnet.network(0, f"10.213.{octet}.0/25")
    b = testnet.network(1, f"10.213.{octet}.128/28", mtu=1400)
    daemon = Daemon(guest_dir / "state", extra_config=network_toml(a) + network_toml(b))
    try:
        daemon.start()
        yield Env(daemon, testnet, a, b)
    finally:
        daemon.kill()
        destroy_domains(daemon.state_dir)
        kill_dnsmasq_under(daemon.state_dir)
        testnet.cleanup()


def links() -> dict[str, str | None]:
    """Every link of the host: name -> the name of its bridge (master), if any."""
    with IPRoute() as ipr:
        found = {m["index"]: m for m in ipr.get_links()}
        return {str(m.get("IFLA_IFNAME")): (str(found[m.get("IFLA_MASTER")].get("IFLA_IFNAME"))
                                            if m.get("IFLA_MASTER") in found else None)
                for m in found.values()}


def wait_markers(con: SerialConsole, macs: set[str], timeout: float = 120) -> dict[str, str]:
    """The guest's udhcpc markers: MAC -> address/prefix, until every MAC has one."""
    got: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while set(got) != macs:
        con.wait_for(r"CA-GUEST addr (\S+) (\S+) (\S+)\r?\n",  # a whole line, not a part of one
                     timeout=max(1.0, deadline - time.monotonic()))
        assert con.match is not None
        got[con.match.group(2)] = con.match.group(3)
    return got


def test_two_nics_fixed_ip_and_port_reach_the_guest_and_go_with_it(env: Env):
    fixed = str(env.a.cidr[50])
    with env.daemon.client() as api:
        r = api.post(env.daemon.url + "/v2.0/ports", json={"port": {"network_id": str(env.b.id),
                                                                      "name": "pre-created"}})
        assert r.status_code == 201, r.text
        port = r.json()["port"]
        r = api.post("/servers", json={"server": {
            "name": "two-nics", "imageRef": IMAGE_ID, "flavorRef": "1", **ACCESS,
            "networks": [{"uuid": str(env.a.id), "fixed_ip": fixed}, {"port": port["id"]}]}})
        assert r.status_code == 202, r.text
        created = r.json()["server"]
        server = env.daemon.wait_status(created["id"], {"ACTIVE", "ERROR"}, timeout=240)
        assert server["status"] == "ACTIVE", server.get("fault")
        nic_a, nic_b = server["addresses"][env.a.name][0], server["addresses"][env.b.name][0]
        assert nic_a["addr"] == fixed
        assert (nic_b["addr"], nic_b["OS-EXT-IPS-MAC:mac_addr"]) == (
            port["fixed_ips"][0]["ip_address"], port["mac_address"])
        ours = api.get(env.daemon.url + f"/v2.0/ports?device_id={created['id']}").json()["ports"]
        taps = {f"tap{p['id'][:11]}" for p in ours}
        assert {links().get(t) for t in taps} == {env.a.bridge, env.b.bridge}

    macs = {nic_a["OS-EXT-IPS-MAC:mac_addr"]: f"{fixed}/25",
            nic_b["OS-EXT-IPS-MAC:mac_addr"]: f"{nic_b['addr']}/28"}
    with env.console(created["id"]) as con:
        assert wait_markers(con, set(macs)) == macs  # udhcpc got exactly the ports' addresses
        con.login("root", created["adminPass"])
        rc, out = con.run("ip addr")
        assert rc == 0, out
        for mac, cidr in macs.items():
            assert mac in out and f"inet {cidr}" in out, out
        for access in ACCESS.values():
            assert access not in out, out  # access addresses are never bound

        for network, nic in ((env.a, nic_a), (env.b, nic_b)):
            ns, _ = env.testnet.namespace_on(network)
            ping = env.testnet.ping(ns, nic["addr"])
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert "3 packets received" in ping.stdout, ping.stdout

        with env.daemon.client() as api:
            r = api.put(f"/servers/{created['id']}", json={"server": UPDATED})
            assert r.status_code == 200, r.text
            assert {k: r.json()["server"][k] for k in UPDATED} == UPDATED
            # As Nova's update answers: the addresses without the OS-EXT-IPS extensions.
            assert r.json()["server"]["addresses"] == {
                net: [{"version": a["version"], "addr": a["addr"]} for a in addrs]
                for net, addrs in server["addresses"].items()}
        rc, out = con.run("ip addr")
        assert not any(a in out for a in (*ACCESS.values(), *UPDATED.values())), out

    with env.daemon.client() as api:
        assert api.delete(f"/servers/{created['id']}").status_code == 204
        env.daemon.wait_status(created["id"], {"DELETED"}, timeout=120)
        left = api.get(env.daemon.url + "/v2.0/ports").json()["ports"]
        assert [(p["id"], p["device_id"], p["status"]) for p in left] == [(port["id"], "", "DOWN")]
    assert not taps & set(links())
    for network in (env.a, env.b):
        assert env.dhcp_file(network, "hosts") == ""
        leases = env.dhcp_file(network, "leases")
        assert not any(mac in leases for mac in macs), leases
    assert len(dnsmasq_pids_under(env.daemon.state_dir)) == 2  # still serving both networks


def test_taps_lost_to_a_host_reboot_come_back_and_dhcp_is_revived(env: Env):
    with env.daemon.client() as api:
        r = api.post("/servers", json={"server": {"name": "reboot", "imageRef": IMAGE_ID,
                                                  "flavorRef": "1", "networks": [{"uuid": str(env.a.id)}]}})
        assert r.status_code == 202, r.text
        created = r.json()["server"]
        server = env.daemon.wait_status(created["id"], {"ACTIVE", "ERROR"}, timeout=240)
        assert server["status"] == "ACTIVE", server.get("fault")
    [nic] = server["addresses"][env.a.name]

    # dnsmasq dies: the agent starts another within a few seconds
    running = set(dnsmasq_pids_under(env.daemon.state_dir))
    pid = int(env.dhcp_file(env.a, "pid"))
    assert pid in running and len(running) == 2  # one per network
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(set(dnsmasq_pids_under(env.daemon.state_dir)) - {pid}) < 2:
        time.sleep(0.2)
    revived = set(dnsmasq_pids_under(env.daemon.state_dir))
    assert len(revived) == 2 and pid not in revived and int(env.dhcp_file(env.a, "pid")) in revived

    # "the host reboots": the agent stops, the guest is off, its tap and the bridge are gone
    with env.daemon.client() as api:
        [port] = api.get(env.daemon.url + f"/v2.0/ports?device_id={created['id']}").json()["ports"]
    tap = f"tap{port['id'][:11]}"
    assert env.daemon.stop() == 0
    for uuid in agent_domains(env.daemon.state_dir):
        subprocess.run(["virsh", "destroy", uuid], capture_output=True, check=False, timeout=60)
    with IPRoute() as ipr:
        for name in (tap, env.a.bridge):
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)
    assert tap not in links()
    env.daemon.start()
    assert links().get(tap) == env.a.bridge  # re-plugged at start-up, before any guest start
    with env.daemon.client() as api:
        env.daemon.wait_status(created["id"], {"SHUTOFF"}, timeout=60)
        r = api.post(f"/servers/{created['id']}/action", json={"os-start": None})
        assert r.status_code == 202, r.text
        env.daemon.wait_status(created["id"], {"ACTIVE"}, timeout=120)
    with env.console(created["id"]) as con:
        wait_markers(con, {nic["OS-EXT-IPS-MAC:mac_addr"]})
    ns, _ = env.testnet.namespace_on(env.a)
    ping = env.testnet.ping(ns, nic["addr"])
    assert ping.returncode == 0, ping.stdout + ping.stderr


def guarded_taps() -> set[str]:
    """The taps the agent's nftables table guards now."""
    return NftPortGuard().guarded()


def test_a_guest_that_takes_another_ip_or_mac_gets_no_traffic_through(env: Env):
    """The agent's nftables rules bind the tap to the port's MAC and IP: DHCP still works,
    a ping from the bridge answers; the guest moving to a free address of the subnet, or
    to another MAC, is cut off (its ARP replies and frames are dropped), and is reachable
    again once it is back on its own; delete takes the rules away."""
    with env.daemon.client() as api:
        r = api.post("/servers", json={"server": {"name": "spoofer", "imageRef": IMAGE_ID,
                                                  "flavorRef": "1", "networks": [{"uuid": str(env.a.id)}]}})
        assert r.status_code == 202, r.text
        created = r.json()["server"]
        server = env.daemon.wait_status(created["id"], {"ACTIVE", "ERROR"}, timeout=240)
        assert server["status"] == "ACTIVE", server.get("fault")
        [port] = api.get(env.daemon.url + f"/v2.0/ports?device_id={created['id']}").json()["ports"]
    [nic] = server["addresses"][env.a.name]
    own_ip, own_mac = nic["addr"], nic["OS-EXT-IPS-MAC:mac_addr"]
    assert f"tap{port['id'][:11]}" in guarded_taps()
    other_ip = str(env.a.cidr[60])  # free: IPAM hands out the lowest first
    other_mac = "fa:16:3e:5b:00:01"
    ns, _ = env.testnet.namespace_on(env.a)
    prefix = env.a.cidr.prefixlen

    def received(address: str) -> bool:
        env.testnet.run_in(ns, "ip", "neigh", "flush", "all")  # no stale answer from before
        ping = env.testnet.ping(ns, address)
        return ping.returncode == 0  # busybox ping: 0 when any reply came

    with env.console(created["id"]) as con:
        assert wait_markers(con, {own_mac}) == {own_mac: f"{own_ip}/{prefix}"}  # DHCP works
        con.login("root", created["adminPass"])
        assert received(own_ip)

        # Another IP of the subnet: nobody on the bridge learns it (ARP from it is dropped).
        rc, out = con.run(f"ip addr del {own_ip}/{prefix} dev eth0 && "
                          f"ip addr add {other_ip}/{prefix} dev eth0")
        assert rc == 0, out
        assert not received(other_ip)
        rc, out = con.run(f"ip addr del {other_ip}/{prefix} dev eth0 && "
                          f"ip addr add {own_ip}/{prefix} dev eth0")
        assert rc == 0, out
        assert received(own_ip)

        # Another MAC, its own IP: frames from that MAC are dropped.
        rc, out = con.run(f"ip link set eth0 down && ip link set eth0 address {other_mac} && "
                          "ip link set eth0 up")
        assert rc == 0, out
        assert not received(own_ip)
        rc, out = con.run(f"ip link set eth0 down && ip link set eth0 address {own_mac} && "
                          "ip link set eth0 up")
        assert rc == 0, out
        assert received(own_ip)

    with env.daemon.client() as api:
        assert api.delete(f"/servers/{created['id']}").status_code == 204
        env.daemon.wait_status(created["id"], {"DELETED"}, timeout=120)
    assert f"tap{port['id'][:11]}" not in guarded_taps()


@pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated")
@pytest.mark.filterwarnings("ignore:The 'service_type' parameter is unnecesary")
def test_openstacksdk_finds_networks_and_manages_ports(env: Env):
    from keystoneauth1 import session as ks_session
    from keystoneauth1 import token_endpoint
    from openstack import connection
    from openstack import exceptions as sdk_exc

    from tests.support.daemon import TOKENS

    session = ks_session.Session(auth=token_endpoint.Token(env.daemon.url + "/v2.1", TOKENS["alice"][0]))
    conn = connection.Connection(session=session, compute_api_version="2.1",
                                 compute_endpoint_override=env.daemon.url + "/v2.1",
                                 network_endpoint_override=env.daemon.url + "/v2.0")
    net = conn.network.find_network(env.a.name, ignore_missing=False)
    assert (net.id, net.mtu) == (str(env.a.id), env.a.mtu)
    assert conn.network.get_subnet(net.subnet_ids[0]).cidr == str(env.a.cidr)
    fixed = str(env.a.cidr[77])
    port = conn.network.create_port(network_id=net.id, fixed_ips=[{"ip_address": fixed}])
    assert (port.fixed_ips[0]["ip_address"], port.status) == (fixed, "DOWN")
    with pytest.raises(sdk_exc.ConflictException, match="is in use"):
        conn.network.create_port(network_id=net.id, fixed_ips=[{"ip_address": fixed}])
    server = conn.compute.create_server(name="sdk-port", image_id=IMAGE_ID, flavor_id="1",
                                        networks=[{"port": port.id}])
    shown = conn.compute.get_server(server.id)
    assert shown.addresses == {env.a.name: [{
        "version": 4, "addr": fixed, "OS-EXT-IPS:type": "fixed",
        "OS-EXT-IPS-MAC:mac_addr": port.mac_address}]}
    assert conn.network.get_port(port.id).device_id == server.id
    conn.compute.delete_server(server.id)
    env.daemon.wait_status(server.id, {"DELETED"}, timeout=120)
    assert conn.network.get_port(port.id).device_id == ""
    conn.network.delete_port(port.id)
    assert list(conn.network.ports()) == []
