"""In-memory NetPlumber, PortGuard and Dhcp: a host's bridges, taps and DHCP servers as dicts, with
faults on demand. They behave as NetlinkPlumber and DnsmasqDhcp do, as the integration
tests of those prove: idempotent, a missing tap is fine to unplug, leases follow hosts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from agent.errors import NetworkError
from agent.model.network import DhcpHost, Network, Port


@dataclass
class FakeTap:
    bridge: str
    mtu: int
    mac: str


class FakePlumber:
    def __init__(self) -> None:
        self.bridges: dict[str, Network] = {}
        self.taps: dict[str, FakeTap] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_on: dict[str, Exception] = {}

    def _call(self, op: str, name: str) -> None:
        self.calls.append((op, name))
        if op in self.fail_on:
            raise self.fail_on[op]

    def ensure_bridge(self, network: Network) -> None:
        self._call("ensure_bridge", network.bridge)
        self.bridges[network.bridge] = network

    def plug(self, port: Port, network: Network) -> None:
        self._call("plug", port.tap)
        if network.bridge not in self.bridges:
            raise NetworkError(f"bridge {network.bridge} does not exist")
        self.taps[port.tap] = FakeTap(bridge=network.bridge, mtu=network.mtu, mac="fe" + port.mac[2:])

    def unplug(self, tap: str) -> None:
        self._call("unplug", tap)
        self.taps.pop(tap, None)

    def tap_exists(self, tap: str) -> bool:
        return tap in self.taps

    def bridge_members(self, bridge: str) -> set[str]:
        return {name for name, tap in self.taps.items() if tap.bridge == bridge}

    def reboot(self) -> None:
        """What a host reboot does: every tap and bridge gone."""
        self.taps.clear()
        self.bridges.clear()


class FakeGuard:
    """NftPortGuard's rules as a dict: tap -> (MAC, IP) it lets through. Its calls go to
    `calls` (pass the plumber's to see the order of both)."""

    def __init__(self, calls: list[tuple[str, str]] | None = None) -> None:
        self.rules: dict[str, tuple[str, str]] = {}
        self.calls = calls if calls is not None else []

    def guard(self, port: Port) -> None:
        self.calls.append(("guard", port.tap))
        self.rules[port.tap] = (port.mac, str(port.ip))

    def unguard(self, tap: str) -> None:
        self.calls.append(("unguard", tap))
        self.rules.pop(tap, None)


@dataclass
class FakeDhcpServer:
    network: Network
    hosts: list[DhcpHost]
    leases: set[str] = field(default_factory=set)  # MACs that got their address
    running: bool = True
    starts: int = 1
    reloads: int = 0


class FakeDhcp:
    def __init__(self) -> None:
        self.servers: dict[UUID, FakeDhcpServer] = {}
        self.fail_on: dict[str, Exception] = {}

    def sync(self, network: Network, hosts: Sequence[DhcpHost]) -> None:
        if "sync" in self.fail_on:
            raise self.fail_on["sync"]
        server = self.servers.get(network.id)
        if server is None:
            self.servers[network.id] = FakeDhcpServer(network=network, hosts=list(hosts))
            return
        macs = {h.mac for h in hosts}
        server.leases &= macs  # a lease never outlives its host
        if not server.running:
            server.running, server.starts = True, server.starts + 1
        elif server.hosts != list(hosts):
            server.reloads += 1
        server.hosts = list(hosts)

    def revive(self) -> list[UUID]:
        revived = []
        for network_id, server in self.servers.items():
            if not server.running:
                server.running, server.starts = True, server.starts + 1
                revived.append(network_id)
        return revived

    def stop_unknown(self, known: set[UUID]) -> list[UUID]:
        gone = [i for i in self.servers if i not in known]
        for i in gone:
            del self.servers[i]
        return gone

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.running = False

    # -- for tests ------------------------------------------------------------------------
    def hosts(self, network_id: UUID) -> dict[str, str]:
        return {h.mac: str(h.ip) for h in self.servers[network_id].hosts}

    def lease(self, network_id: UUID, mac: str) -> str | None:
        """A guest's DHCP client asks: the address it gets (and the lease is recorded)."""
        server = self.servers.get(network_id)
        if server is None or not server.running:
            return None
        for h in server.hosts:
            if h.mac == mac:
                server.leases.add(mac)
                return str(h.ip)
        return None
