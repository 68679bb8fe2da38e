"""NftPortGuard against the real kernel: a "guest" namespace plugged into a test bridge
through a link named as a port's tap, a peer namespace on the same bridge. With the
port's rules, the guest answers only from its port's MAC and IP; moved to another
address or MAC it gets nothing through; without the rules it would. Everything is
catest-named (the tap-named link lives in a catest bridge) and removed after the test."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pyroute2 import IPRoute

from agent.adapters.netlink import NetlinkPlumber
from agent.adapters.nft_guard import NftPortGuard
from agent.model.network import Port, make_mac
from tests.support.netns import TestNet

pytestmark = pytest.mark.integration


def test_a_guarded_port_passes_traffic_only_from_its_own_mac_and_ip(testnet: TestNet):
    net = testnet.network(0, "10.213.41.0/24")
    NetlinkPlumber().ensure_bridge(net)
    port = Port(id=uuid.uuid4(), network_id=net.id, project_id="p", mac=make_mac(b"\x0a\x0b\x01"),
                ip=net.cidr[20], created_at=datetime.now(UTC))
    guest, _ = testnet.namespace_on(net, host=20)
    testnet.set_mac(guest, port.mac)
    with IPRoute() as ipr:  # its bridge end takes the port's tap name: the rules follow names
        index = ipr.link_lookup(ifname=testnet.name("v0"))[0]
        ipr.link("set", index=index, state="down")
        ipr.link("set", index=index, ifname=port.tap, state="up")
    peer, _ = testnet.namespace_on(net, host=30)
    inner = testnet.name("p0")
    guard = NftPortGuard()

    def reaches(address: str) -> bool:
        testnet.run_in(peer, "ip", "neigh", "flush", "all")
        return testnet.ping(peer, address).returncode == 0

    def in_guest(*cmd: str) -> None:
        done = testnet.run_in(guest, *cmd)
        assert done.returncode == 0, done.stderr

    try:
        guard.guard(port)
        guard.guard(port)  # idempotent
        assert port.tap in guard.guarded()
        assert reaches(str(port.ip))

        in_guest("ip", "addr", "flush", "dev", inner)
        in_guest("ip", "addr", "add", "10.213.41.21/24", "dev", inner)
        assert not reaches("10.213.41.21")  # another address of the subnet: cut off
        in_guest("ip", "addr", "flush", "dev", inner)
        in_guest("ip", "addr", "add", f"{port.ip}/24", "dev", inner)
        assert reaches(str(port.ip))

        testnet.set_mac(guest, make_mac(b"\x0a\x0b\x02"))
        assert not reaches(str(port.ip))  # another MAC: cut off
        testnet.set_mac(guest, port.mac)
        assert reaches(str(port.ip))

        in_guest("ip", "addr", "flush", "dev", inner)
        in_guest("ip", "addr", "add", "10.213.41.21/24", "dev", inner)
        guard.unguard(port.tap)
        guard.unguard(port.tap)  # idempotent
        assert port.tap not in guard.guarded()
        assert reaches("10.213.41.21")  # the rules, nothing else, stopped it
    finally:
        guard.unguard(port.tap)
