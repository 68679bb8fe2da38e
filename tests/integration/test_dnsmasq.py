"""DnsmasqDhcp against real dnsmasq, asked by busybox udhcpc from a network namespace
joined to the bridge (a guest's DHCP client, without a guest): static leases only, on its
bridge only, DNS off, reloaded or restarted as hosts change, revived when it dies."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from agent.adapters.dnsmasq import DnsmasqDhcp
from agent.adapters.netlink import NetlinkPlumber
from agent.errors import DhcpError
from agent.model.network import DhcpHost, Network
from tests.support.netns import TestNet, dnsmasq_pids_under, kill_dnsmasq_under

pytestmark = pytest.mark.integration

MAC1, MAC2, STRANGER = "fa:16:3e:10:00:01", "fa:16:3e:10:00:02", "fa:16:3e:10:00:99"


@pytest.fixture
def testnet() -> Iterator[TestNet]:
    t = TestNet()
    yield t
    t.cleanup()


@pytest.fixture
def dhcp(guest_dir: Path) -> Iterator[DnsmasqDhcp]:
    d = DnsmasqDhcp(guest_dir)  # dnsmasq runs as nobody: its files must be reachable
    yield d
    d.stop_all()
    kill_dnsmasq_under(guest_dir)


@pytest.fixture
def net(testnet: TestNet) -> Network:
    network = testnet.network(0, "10.213.60.0/24", mtu=1400)
    NetlinkPlumber().ensure_bridge(network)
    return network


def host(mac: str, ip: str) -> DhcpHost:
    return DhcpHost(mac=mac, ip=IPv4Address(ip))


def ask(testnet: TestNet, ns: str, mac: str, tries: int = 3) -> str | None:
    """What address a DHCP client with this MAC gets on the namespace's link (or None)."""
    ifname = testnet.set_mac(ns, mac)
    r = testnet.run_in(ns, "busybox", "udhcpc", "-i", ifname, "-n", "-q", "-f", "-t", str(tries),
                       "-T", "1", "-A", "1", "-s", "/bin/true", timeout=30)
    m = re.search(r"lease of (\S+) obtained", r.stdout + r.stderr)
    return m.group(1) if m else None


def test_a_client_gets_exactly_its_ports_address_and_a_stranger_nothing(dhcp, net, testnet):
    dhcp.sync(net, [host(MAC1, "10.213.60.11"), host(MAC2, "10.213.60.12")])
    ns, _ = testnet.namespace_on(net)
    assert ask(testnet, ns, MAC1) == "10.213.60.11"
    assert ask(testnet, ns, MAC2) == "10.213.60.12"
    assert ask(testnet, ns, STRANGER, tries=2) is None
    leases = dhcp.lease_file(net.id).read_text()
    assert MAC1 in leases and STRANGER not in leases
    cmd = Path(f"/proc/{dhcp.pid(net.id)}/cmdline").read_bytes().split(b"\0")
    for flag in (b"--port=0", b"--bind-interfaces", b"--conf-file=/dev/null", b"--except-interface=lo",
                 f"--interface={net.bridge}".encode(), b"--dhcp-option=option:mtu,1400"):
        assert flag in cmd
    assert any(a.startswith(b"--dhcp-range=10.213.60.0,static,") for a in cmd)


def test_nothing_listens_for_dns(dhcp, net):
    dhcp.sync(net, [host(MAC1, "10.213.60.11")])
    out = subprocess.run(["ss", "-H", "-lnup"], capture_output=True, text=True, check=True).stdout
    mine = [line for line in out.splitlines() if f"pid={dhcp.pid(net.id)}," in line]
    assert mine and all(":67 " in line or line.split()[3].endswith(":67") for line in mine), mine


def test_a_new_host_is_a_reload_and_a_removed_one_loses_its_lease(dhcp, net, testnet):
    dhcp.sync(net, [host(MAC1, "10.213.60.11")])
    ns, _ = testnet.namespace_on(net)
    assert ask(testnet, ns, MAC1) == "10.213.60.11"
    pid = dhcp.pid(net.id)
    dhcp.sync(net, [host(MAC1, "10.213.60.11"), host(MAC2, "10.213.60.12")])
    assert dhcp.pid(net.id) == pid  # SIGHUP, same process
    assert ask(testnet, ns, MAC2) == "10.213.60.12"
    dhcp.sync(net, [host(MAC2, "10.213.60.12")])
    assert dhcp.pid(net.id) != pid and dhcp.running(net.id)
    assert MAC1 not in dhcp.lease_file(net.id).read_text()
    assert dhcp.hosts_file(net.id).read_text() == f"{MAC2},10.213.60.12\n"
    assert MAC2 in dhcp.lease_file(net.id).read_text()  # the others' leases are kept
    assert ask(testnet, ns, MAC1, tries=2) is None
    dhcp.sync(net, [])
    assert dhcp.lease_file(net.id).read_text() == "" and dhcp.running(net.id)


def test_it_serves_its_bridge_only(dhcp, net, testnet):
    other = testnet.network(1, "10.213.61.0/24")
    NetlinkPlumber().ensure_bridge(other)
    dhcp.sync(net, [host(MAC1, "10.213.60.11")])
    ns, _ = testnet.namespace_on(other)
    assert ask(testnet, ns, MAC1, tries=2) is None


def test_a_dead_server_is_revived_and_serves_again(dhcp, net, testnet):
    dhcp.sync(net, [host(MAC1, "10.213.60.11")])
    os.kill(dhcp.pid(net.id), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while dhcp.running(net.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dhcp.revive() == [net.id]
    assert dhcp.revive() == []
    ns, _ = testnet.namespace_on(net)
    assert ask(testnet, ns, MAC1) == "10.213.60.11"


def test_one_left_by_a_killed_agent_is_replaced_not_doubled(guest_dir, net, testnet):
    before = DnsmasqDhcp(guest_dir)
    before.sync(net, [host(MAC1, "10.213.60.11")])
    orphan = before.pid(net.id)  # the agent dies without stopping it
    after = DnsmasqDhcp(guest_dir)
    try:
        after.sync(net, [host(MAC1, "10.213.60.11")])
        assert dnsmasq_pids_under(guest_dir) == [after.pid(net.id)] != [orphan]
    finally:
        after.stop_all()
        kill_dnsmasq_under(guest_dir)


def test_servers_of_networks_no_longer_configured_are_stopped_and_their_files_removed(dhcp, net):
    dhcp.sync(net, [host(MAC1, "10.213.60.11")])
    assert dhcp.stop_unknown({net.id}) == []
    assert dhcp.stop_unknown(set()) == [net.id]
    assert not dhcp.dir(net.id).exists() and dnsmasq_pids_under(dhcp.root.parent) == []


def test_a_bridge_that_does_not_exist_is_a_clear_error(dhcp, testnet):
    ghost = testnet.network(2, "10.213.62.0/24")
    with pytest.raises(DhcpError, match="exited"):
        dhcp.sync(ghost, [host(MAC1, "10.213.62.11")])


def test_a_state_dir_dnsmasq_cannot_reach_is_a_clear_error(tmp_path, net):
    tmp_path.chmod(0o700)
    with pytest.raises(DhcpError, match="not world-traversable"):
        DnsmasqDhcp(tmp_path).sync(net, [host(MAC1, "10.213.60.11")])


def test_it_serves_under_the_services_umask(guest_dir, net, testnet):
    old = os.umask(0o027)  # systemd/compute-agent.service runs the agent with UMask=0027
    d = DnsmasqDhcp(guest_dir / "strict")
    try:
        (guest_dir / "strict").mkdir()
        (guest_dir / "strict").chmod(0o755)  # as build_agent does with the state dir
        d.sync(net, [host(MAC1, "10.213.60.11")])
    finally:
        os.umask(old)
    try:
        ns, _ = testnet.namespace_on(net)
        assert ask(testnet, ns, MAC1) == "10.213.60.11"
    finally:
        d.stop_all()


def test_two_hosts_dnsmasq_on_one_segment_each_answer_only_their_own_ports(guest_dir, testnet):
    """A network spanning two hosts (emulated: two bridges joined through a test switch):
    the gateway host's bridge holds the gateway, the other host's only its host_address
    (/32). Each dnsmasq leases its own port; the other one ignores that MAC entirely (no
    offer, no NAK), so two dnsmasq on one segment never fight over a guest."""
    uplinks = testnet.switch(0, 2)
    cidr = "10.213.61.0/24"
    gw_net = testnet.network(0, cidr, physical_interface=uplinks[0])
    l2_net = testnet.network(1, cidr, physical_interface=uplinks[1], host_address="10.213.61.3")
    l2_net = l2_net.model_copy(update={"id": gw_net.id})  # one network, two hosts
    for network in (gw_net, l2_net):
        NetlinkPlumber().ensure_bridge(network)
    first, second = DnsmasqDhcp(guest_dir / "h1"), DnsmasqDhcp(guest_dir / "h2")
    for folder in (guest_dir / "h1", guest_dir / "h2"):
        folder.mkdir(mode=0o755)
    try:
        first.sync(gw_net, [host(MAC1, "10.213.61.11")])
        second.sync(l2_net, [host(MAC2, "10.213.61.12")])
        ns, _ = testnet.namespace_on(testnet.network(2, cidr).model_copy(
            update={"bridge": testnet.name("swn0")}))  # a client on the switch itself
        assert ask(testnet, ns, MAC1) == "10.213.61.11"
        assert ask(testnet, ns, MAC2) == "10.213.61.12"
        assert ask(testnet, ns, STRANGER, tries=2) is None
        for dhcp, own, other in ((first, MAC1, MAC2), (second, MAC2, MAC1)):
            log = (dhcp.dir(gw_net.id) / "dnsmasq.log").read_text()
            assert re.search(rf"DHCPACK\(\S+\) \S+ {own}", log), log
            assert re.search(rf"{other} ignored", log), log  # heard, and left alone
            assert not re.search(rf"DHCP(OFFER|ACK|NAK)\(\S+\) (\S+ )?{other}", log), log
        with IPRoute() as ipr:  # the second host routes nothing into the subnet
            index = ipr.link_lookup(ifname=l2_net.bridge)[0]
            assert [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in
                    ipr.get_addr(index=index, family=2)] == [("10.213.61.3", 32)]
            assert not ipr.get_routes(family=2, table=254, oif=index)
    finally:
        for dhcp in (first, second):
            dhcp.stop_all()
        kill_dnsmasq_under(guest_dir)
