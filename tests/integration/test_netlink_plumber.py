"""NetlinkPlumber against the real kernel (pyroute2, as root): bridges and taps made,
repaired and removed idempotently; taps removed behind the agent's back come back with the
start-up resync. Every link is catest-named and removed after the test, pass or fail."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from ipaddress import IPv4Network

import pytest
from pyroute2 import IPRoute

from agent.adapters.host_checks import check_subnets
from agent.adapters.netlink import NetlinkPlumber, host_routes
from agent.config import Config
from agent.core.netplumbing import NetworkPlumbing
from agent.core.networks import NetworkCatalog
from agent.errors import NetworkError
from agent.model.host import HostRoute
from agent.model.network import Network, Port, make_mac
from tests.unit.fakes.network import FakeDhcp
from tests.unit.fakes.store import MemoryStore

pytestmark = pytest.mark.integration


@pytest.fixture
def plumber() -> NetlinkPlumber:
    return NetlinkPlumber()


def port_on(network: Network, n: int) -> Port:
    return Port(id=uuid.uuid4(), network_id=network.id, project_id="p", mac=make_mac(bytes([0, 1, n])),
                ip=network.cidr[10 + n], created_at=datetime.now(UTC))


def link(name: str) -> dict:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return {}
        msg = ipr.link("get", index=found[0])[0]
        master = msg.get("IFLA_MASTER")
        return {"mtu": msg.get("IFLA_MTU"), "mac": msg.get("IFLA_ADDRESS"),
                "up": bool(msg["flags"] & 1),
                "master": ipr.link("get", index=master)[0].get("IFLA_IFNAME") if master else None,
                "kind": msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                "addrs": {(a.get("IFA_ADDRESS"), a["prefixlen"])
                          for a in ipr.get_addr(index=found[0], family=2)}}


def test_a_bridge_is_made_up_with_mtu_and_gateway_and_made_again_idempotently(plumber, testnet):
    net = testnet.network(0, "10.213.40.0/24", mtu=1400)
    plumber.ensure_bridge(net)
    first = link(net.bridge)
    assert (first["kind"], first["up"], first["mtu"]) == ("bridge", True, 1400)
    assert first["addrs"] == {("10.213.40.1", 24)}
    plumber.ensure_bridge(net)
    assert link(net.bridge) == first  # nothing changed, nothing doubled, the MAC is pinned


def test_a_bridge_is_repaired_when_changed_behind_our_back(plumber, testnet):
    net = testnet.network(0, "10.213.41.0/24")
    plumber.ensure_bridge(net)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=net.bridge)[0]
        ipr.addr("del", index=index, address="10.213.41.1", prefixlen=24)
        ipr.link("set", index=index, state="down", mtu=1300)
    plumber.ensure_bridge(net)
    fixed = link(net.bridge)
    assert (fixed["up"], fixed["mtu"], fixed["addrs"]) == (True, 1500, {("10.213.41.1", 24)})


def test_a_host_that_stops_being_the_gateway_keeps_only_its_host_address(plumber, testnet):
    """The config moves the gateway to another host (host_address set): the old gateway
    leaves this bridge (two gateways on one segment would fight), its /32 comes, the
    subnet's route goes; an address outside the subnet is the operator's and stays."""
    net = testnet.network(0, "10.213.42.0/24")
    plumber.ensure_bridge(net)
    with IPRoute() as ipr:
        ipr.addr("add", index=ipr.link_lookup(ifname=net.bridge)[0], address="192.0.2.7",
                 prefixlen=32)  # a /32: no route that another test's subnet could meet
    plumber.ensure_bridge(net.model_copy(update={"host_address": net.cidr[3]}))
    assert link(net.bridge)["addrs"] == {("10.213.42.3", 32), ("192.0.2.7", 32)}
    assert not any(r.destination == net.cidr for r in host_routes())
    plumber.ensure_bridge(net)  # and back: the gateway host again
    assert link(net.bridge)["addrs"] == {("10.213.42.1", 24), ("192.0.2.7", 32)}


def test_plug_and_unplug_are_idempotent(plumber, testnet):
    net = testnet.network(0, "10.213.42.0/24", mtu=1450)
    plumber.ensure_bridge(net)
    port = port_on(net, 1)
    plumber.plug(port, net)
    plumber.plug(port, net)
    tap = link(port.tap)
    assert (tap["kind"], tap["master"], tap["mtu"], tap["up"]) == ("tun", net.bridge, 1450, True)
    assert tap["mac"] == "fe" + port.mac[2:]  # never the guest's own MAC
    assert plumber.tap_exists(port.tap)
    assert plumber.bridge_members(net.bridge) == {port.tap}
    plumber.unplug(port.tap)
    plumber.unplug(port.tap)
    assert link(port.tap) == {} and not plumber.tap_exists(port.tap)
    assert plumber.bridge_members(net.bridge) == set()
    assert plumber.bridge_members(testnet.name("bnone")) == set()


def test_plug_repairs_a_tap_moved_out_of_its_bridge(plumber, testnet):
    net = testnet.network(0, "10.213.43.0/24")
    plumber.ensure_bridge(net)
    port = port_on(net, 2)
    plumber.plug(port, net)
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=port.tap)[0], master=0, state="down")
    plumber.plug(port, net)
    assert (link(port.tap)["master"], link(port.tap)["up"]) == (net.bridge, True)


def test_interfaces_of_another_kind_are_never_touched(plumber, testnet):
    net = testnet.network(0, "10.213.44.0/24")
    with IPRoute() as ipr:  # a veth squatting on the bridge's name
        ipr.link("add", ifname=net.bridge, kind="veth", peer=testnet.name("sq"))
    with pytest.raises(NetworkError, match="not a bridge"):
        plumber.ensure_bridge(net)
    with pytest.raises(NetworkError, match="not a tap"):
        plumber.unplug(net.bridge)
    assert link(net.bridge)["kind"] == "veth"
    with pytest.raises(NetworkError, match="does not exist"):
        plumber.plug(port_on(net, 3), net.model_copy(update={"bridge": testnet.name("bx")}))


def test_a_missing_physical_interface_is_an_error_naming_it(plumber, testnet):
    net = testnet.network(0, "10.213.46.0/24", physical_interface=testnet.name("nic"))
    with pytest.raises(NetworkError, match="does not exist"):
        plumber.ensure_bridge(net)


def test_a_flat_uplink_is_joined_to_the_bridge(plumber, testnet):
    uplink = testnet.name("up")
    with IPRoute() as ipr:
        ipr.link("add", ifname=uplink, kind="veth", peer=testnet.name("upp"))
    net = testnet.network(0, "10.213.47.0/24", physical_interface=uplink)
    plumber.ensure_bridge(net)
    plumber.ensure_bridge(net)
    assert (link(uplink)["master"], link(uplink)["up"]) == (net.bridge, True)


def test_a_vlan_uplink_is_made_on_its_parent(plumber, testnet):
    parent = testnet.name("up")
    with IPRoute() as ipr:
        ipr.link("add", ifname=parent, kind="veth", peer=testnet.name("upp"))
    net = testnet.network(0, "10.213.48.0/24", physical_interface=parent, vlan=42)
    try:
        plumber.ensure_bridge(net)
    except NetworkError as e:
        if "Operation not supported" in str(e):
            pytest.skip("no 802.1Q (8021q) support in this kernel")
        raise
    plumber.ensure_bridge(net)
    vlan = link(f"{parent}.42")
    assert (vlan["kind"], vlan["master"], vlan["up"]) == ("vlan", net.bridge, True)


def test_the_resync_replugs_taps_removed_behind_the_agents_back(plumber, testnet):
    """Sync on purpose: pyroute2's sync API must not run on a thread with a running loop."""
    net = testnet.network(0, "10.213.49.0/24")
    store = MemoryStore()
    server_id = uuid.uuid4()
    ports = [port_on(net, n).model_copy(update={"device_id": str(server_id), "device_index": n})
             for n in range(2)]
    plumbing = NetworkPlumbing(store, NetworkCatalog([net]), plumber, FakeDhcp())

    async def scenario() -> None:
        for p in ports:
            await store.add_port(p)
        await plumbing.plug_server(server_id)
        for p in ports:  # a host reboot, or someone with `ip link del`
            await asyncio.to_thread(plumber.unplug, p.tap)  # pyroute2 never on the loop thread
        stray = port_on(net, 9)
        await asyncio.to_thread(plumber.plug, stray, net)
        report = await plumbing.resync({server_id}, {server_id})
        assert sorted(report.taps_replugged) == sorted(p.tap for p in ports)
        assert report.taps_removed == [stray.tap]

    asyncio.run(scenario())
    assert plumber.bridge_members(net.bridge) == {p.tap for p in ports}
    for p in ports:
        assert link(p.tap)["master"] == net.bridge


def test_host_routes_show_a_bridge_subnet_that_another_network_may_not_overlap(plumber, testnet):
    """The start check's facts from the real kernel: a bridge's connected route is read
    with its interface, so the network owning the bridge passes and one elsewhere fails."""
    octet = 200 + int(testnet.tag, 16) % 50  # two runs at once do not share a subnet
    net = testnet.network(0, f"10.213.{octet}.0/24")
    plumber.ensure_bridge(net)
    assert HostRoute(destination=net.cidr, interface=net.bridge) in host_routes()
    assert check_subnets(Config(networks=[net])).ok
    elsewhere = net.model_copy(update={"id": uuid.uuid4(), "bridge": testnet.name("x"),
                                       "cidr": IPv4Network(f"10.213.{octet}.0/25")})
    result = check_subnets(Config(networks=[elsewhere]))
    assert not result.ok
    assert f"overlaps the host route {net.cidr} on {net.bridge}" in result.detail


def test_host_routes_can_be_read_where_an_event_loop_runs():
    """The daemon runs its start checks inside its event loop, where pyroute2's IPRoute
    cannot be made ("This event loop is already running"): the subnets check crashed and
    no daemon with a network configured could start."""
    async def in_the_loop() -> list[HostRoute]:
        return host_routes()

    assert asyncio.run(in_the_loop()) == host_routes()
