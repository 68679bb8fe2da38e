"""The host side of the store's ports: bridges, taps and DHCP leases, made to match.

Every operation is idempotent and reads what it needs from the store, so a workflow
resumed after a restart, or the start-up resync after a host reboot (taps gone, dnsmasq
gone), simply runs it again. DHCP leases are always computed from the store under a
per-network lock, so two servers plugged at once never write an older lease list over a
newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog

from agent.core.networks import NetworkCatalog
from agent.errors import AgentError, NetworkError
from agent.model.domain import InterfaceSpec
from agent.model.network import (
    Network,
    Port,
    PortStatus,
    bridge_clash,
    dhcp_hosts,
    is_tap_name,
)
from agent.protocols import Dhcp, Hypervisor, NetPlumber, PortGuard, Store

log = structlog.get_logger("agent.network")

SUPERVISE_INTERVAL_S = 2.0


@dataclass
class ResyncReport:
    bridges: list[str] = field(default_factory=list)
    taps_replugged: list[str] = field(default_factory=list)
    taps_removed: list[str] = field(default_factory=list)
    ports_released: list[UUID] = field(default_factory=list)
    dhcp_synced: list[UUID] = field(default_factory=list)
    dhcp_stopped: list[UUID] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class NetworkPlumbing:
    def __init__(self, store: Store, catalog: NetworkCatalog, plumber: NetPlumber,
                 dhcp: Dhcp, guard: PortGuard | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.plumber = plumber
        self.dhcp = dhcp
        self.guard = guard  # None: nothing guarded (only tests without port_security)
        self._locks: dict[UUID, asyncio.Lock] = {}
        # Taps of quarantined domains (guests the store does not know, see recovery): kept
        # in their bridges by the resync and never plugged for a new port.
        self.quarantined_taps: set[str] = set()

    @staticmethod
    async def _run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def _network(self, port: Port) -> Network:
        network = self.catalog.find(port.network_id)
        if network is None:
            raise NetworkError(f"network {port.network_id} of port {port.id} is not configured "
                               "on this host")
        return network

    def ports_of(self, server_id: UUID) -> list[Port]:
        return self.store.list_ports(device_id=str(server_id))

    def interfaces(self, server_id: UUID) -> tuple[InterfaceSpec, ...]:
        """The server's NICs for its domain, in order."""
        return tuple(InterfaceSpec(tap=p.tap, mac=p.mac, mtu=self._network(p).mtu)
                     for p in self.ports_of(server_id))

    async def _plug(self, port: Port, network: Network) -> None:
        """The port's rules (port_security) before its tap joins the bridge, then the tap."""
        if self.guard is not None:
            if network.port_security:
                await self._run(self.guard.guard, port)
            else:
                await self._run(self.guard.unguard, port.tap)
        await self._run(self.plumber.plug, port, network)

    async def _unplug(self, tap: str) -> None:
        await self._run(self.plumber.unplug, tap)
        if self.guard is not None:
            await self._run(self.guard.unguard, tap)

    # -- one server ---------------------------------------------------------------------
    async def plug_server(self, server_id: UUID) -> list[Port]:
        """Bridges up, a tap per port in its bridge, the leases served. Idempotent."""
        ports = self.ports_of(server_id)
        taken = sorted(p.tap for p in ports if p.tap in self.quarantined_taps)
        if taken:
            raise NetworkError(f"tap {', '.join(taken)} belongs to a quarantined guest the store "
                               "does not know; its port cannot be plugged")
        networks = {p.network_id: self._network(p) for p in ports}
        clashes = [f"port {p.id} address {p.ip}: {why}" for p in ports
                   if (why := bridge_clash(networks[p.network_id], p.ip))]
        if clashes:  # two hosts answering ARP for one address: refused before any tap
            raise NetworkError("; ".join(clashes))
        for network in networks.values():
            await self._run(self.plumber.ensure_bridge, network)
        for port in ports:
            await self._plug(port, networks[port.network_id])
        if ports:  # a server without NICs costs no write
            await self.store.set_port_status([p.id for p in ports], PortStatus.ACTIVE.value)
        await self.sync_dhcp(networks)
        return ports

    async def release_server(self, server_id: UUID) -> list[Port]:
        """Taps removed, then the ports released in the store (the agent's deleted, the
        user's detached), then the leases withdrawn. Idempotent."""
        for port in self.ports_of(server_id):
            if port.tap not in self.quarantined_taps:  # a name clash: that tap is not this port's
                await self._unplug(port.tap)
        released = await self.store.release_ports(str(server_id))
        await self.sync_dhcp({p.network_id for p in released})
        if released:
            log.info("network.released", server_id=str(server_id),
                     ports=[str(p.id) for p in released])
        return released

    async def sync_dhcp(self, network_ids: Iterable[UUID]) -> list[UUID]:
        synced = []
        for network_id in sorted(set(network_ids), key=str):
            network = self.catalog.find(network_id)
            if network is None or not network.dhcp:
                continue
            async with self._locks.setdefault(network_id, asyncio.Lock()):
                hosts = dhcp_hosts(self.store.list_ports(network_id=network_id))
                await self._run(self.dhcp.sync, network, hosts)
            synced.append(network_id)
        return synced

    # -- the whole host ---------------------------------------------------------------
    async def resync(self, live: set[UUID], with_domain: set[UUID]) -> ResyncReport:
        """At start-up, before jobs resume: bridges made, ports of servers that are gone
        released, taps of servers whose domain exists re-plugged (a host reboot removes
        them), stray taps in our bridges removed (not a quarantined guest's), and every
        DHCP server started with the leases of the store. One failure is logged and
        reported; the rest goes on."""
        report = ResyncReport()
        for network in self.catalog.list():
            await self._attempt(report, f"bridge {network.bridge}",
                                self._run(self.plumber.ensure_bridge, network))
            report.bridges.append(network.bridge)
        known = {n.id for n in self.catalog.list()}
        with contextlib.suppress(AgentError):
            report.dhcp_stopped = await self._run(self.dhcp.stop_unknown, known)

        ports = self.store.list_ports()
        for device in sorted({p.device_id for p in ports if p.bound}):
            device_uuid = _as_uuid(device)
            if device_uuid is None or device_uuid not in live:
                released = await self.store.release_ports(device)
                report.ports_released += [p.id for p in released]
                log.warning("network.orphan_ports_released", device_id=device,
                            ports=[str(p.id) for p in released])
        ports = self.store.list_ports()
        keep = {p.tap for p in ports if p.bound} | self.quarantined_taps
        for port in ports:
            if not port.bound or _as_uuid(port.device_id) not in with_domain:
                continue
            network = self.catalog.find(port.network_id)
            if network is None:
                report.errors.append(f"port {port.id}: network {port.network_id} not configured")
                continue
            missing = not await self._run(self.plumber.tap_exists, port.tap)
            if await self._attempt(report, f"tap {port.tap}", self._plug(port, network)) and missing:
                report.taps_replugged.append(port.tap)
                log.warning("network.tap_replugged", tap=port.tap, server_id=port.device_id)
        for network in self.catalog.list():
            members = await self._run(self.plumber.bridge_members, network.bridge)
            for tap in sorted(m for m in members if is_tap_name(m) and m not in keep):
                if await self._attempt(report, f"tap {tap}", self._unplug(tap)):
                    report.taps_removed.append(tap)
                    log.warning("network.orphan_tap_removed", tap=tap, bridge=network.bridge)
        for network in self.catalog.list():
            if network.dhcp and await self._attempt(report, f"dhcp {network.name}",
                                                    self.sync_dhcp([network.id])):
                report.dhcp_synced.append(network.id)
        log.info("network.resynced", bridges=len(report.bridges),
                 taps_replugged=len(report.taps_replugged), taps_removed=len(report.taps_removed),
                 ports_released=len(report.ports_released), dhcp=len(report.dhcp_synced),
                 errors=len(report.errors))
        return report

    async def resync_host(self, hypervisor: Hypervisor) -> ResyncReport:
        """resync() for the servers the store has live and the domains libvirt has."""
        live = {s.id for s in self.store.list_servers()}
        try:
            with_domain = await self._run(hypervisor.domain_uuids) & live
        except AgentError as e:  # plugging a tap too many is harmless; one too few is not
            log.error("network.list_domains_failed", error=str(e))
            with_domain = live
        return await self.resync(live, with_domain)

    @staticmethod
    async def _attempt(report: ResyncReport, what: str, work: Any) -> bool:
        try:
            await work
        except AgentError as e:
            report.errors.append(f"{what}: {e}")
            log.error("network.resync_failed", what=what, error=str(e))
            return False
        return True

    async def supervise(self, interval: float = SUPERVISE_INTERVAL_S) -> None:
        """Forever: restart any DHCP server that died. Cancel to stop."""
        while True:
            await asyncio.sleep(interval)
            try:
                revived = await self._run(self.dhcp.revive)
            except AgentError as e:
                log.error("network.dhcp_revive_failed", error=str(e))
                continue
            for network_id in revived:
                log.warning("network.dhcp_restarted", network_id=str(network_id))

    async def close(self) -> None:
        await self._run(self.dhcp.stop_all)


def _as_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None
