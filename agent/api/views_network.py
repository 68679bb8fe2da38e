"""Network bodies, as Neutron (v2.0) shapes them, and a server's `addresses` as Nova does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from ipaddress import IPv4Address
from typing import Any

from agent.model.network import Network, Port

SHARED_TENANT = ""  # configured networks belong to no project: every project may use them


def _time(port: Port) -> str:
    return port.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def network_view(network: Network) -> dict[str, Any]:
    return {
        "id": str(network.id),
        "name": network.name,
        "status": "ACTIVE",
        "admin_state_up": True,
        "shared": True,
        "router:external": False,
        "subnets": [str(network.subnet_id)],
        "mtu": network.mtu,
        "tenant_id": SHARED_TENANT,
        "project_id": SHARED_TENANT,
        "provider:network_type": network.network_type,
        "provider:physical_network": network.physical_interface,
        "provider:segmentation_id": network.vlan,
        "port_security_enabled": network.port_security,
    }


def allocation_pools(first: IPv4Address, last: IPv4Address,
                     holes: list[IPv4Address]) -> list[dict[str, str]]:
    """The ranges first..last without the (sorted) holes: the gateway, the host's address
    and the reserved ones are no port's."""
    pools, start = [], first
    for hole in [*holes, last + 1]:
        if start <= hole - 1 and hole - 1 <= last:
            pools.append({"start": str(start), "end": str(min(hole - 1, last))})
        start = max(start, hole + 1)
    return pools


def subnet_view(network: Network) -> dict[str, Any]:
    cidr = network.cidr
    gateway = network.gateway_ip
    pools = allocation_pools(cidr.network_address + 1, cidr.broadcast_address - 1,
                             sorted(network.unallocatable))
    return {
        "id": str(network.subnet_id),
        "name": network.name,
        "network_id": str(network.id),
        "ip_version": 4,
        "cidr": str(cidr),
        "gateway_ip": str(gateway),
        "enable_dhcp": network.dhcp,
        "allocation_pools": pools,
        "dns_nameservers": [],
        "host_routes": [],
        "tenant_id": SHARED_TENANT,
        "project_id": SHARED_TENANT,
    }


def port_view(port: Port, network: Network | None) -> dict[str, Any]:
    subnet = str(network.subnet_id) if network is not None else ""
    return {
        "id": str(port.id),
        "name": port.name,
        "network_id": str(port.network_id),
        "tenant_id": port.project_id,
        "project_id": port.project_id,
        "mac_address": port.mac,
        "fixed_ips": [{"subnet_id": subnet, "ip_address": str(port.ip)}],
        "device_id": port.device_id,
        "device_owner": port.device_owner,
        "status": port.status.value,
        "admin_state_up": True,
        "port_security_enabled": network.port_security if network is not None else True,
        "created_at": _time(port),
    }


def addresses_view(nics: Sequence[tuple[Network | None, Port]], *,
                   extended: bool = True) -> dict[str, list[dict[str, Any]]]:
    """A server's `addresses`: by network name, each NIC's fixed IP (and, extended, as in
    the server's view, its type and MAC; /servers/{id}/ips shows version and addr only)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for network, port in nics:
        name = network.name if network is not None else str(port.network_id)
        address: dict[str, Any] = {"version": 4, "addr": str(port.ip)}
        if extended:
            address.update({"OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": port.mac})
        out.setdefault(name, []).append(address)
    return out
