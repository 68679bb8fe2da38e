"""Networks, ports and their addresses (IPAM), as pure values and rules.

A network is one Linux bridge on this host (optionally joined to a VLAN sub-interface or
a physical interface), one IPv4 subnet and, when `dhcp` is on, one dnsmasq handing out
static leases. A port is one NIC: a MAC and a fixed IP on a network, bound to a server
(`device_id`) or not. Nothing here touches the host.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', no whitespace, not "." or "..".
IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAC_PREFIX = "fa:16:3e"  # OpenStack's (Neutron's base_mac)
TAP_PREFIX = "tap"
TAP_NAME_LEN = 14  # Nova's NIC_NAME_LEN: "tap" + the first 11 characters of the port id
MAX_NICS = 16  # per server: each NIC takes a PCI slot of the guest
DEVICE_OWNER = "compute:nova"
# Subnet ids are derived from network ids (one subnet per network), stably.
_SUBNET_NAMESPACE = UUID("6c1b7b84-3b0e-4f4e-9d1f-7a0d3c9e2b51")


def tap_name(port_id: UUID) -> str:
    """The host-side tap of a port, named as Nova names it: tapXXXXXXXX-XX."""
    return (TAP_PREFIX + str(port_id))[:TAP_NAME_LEN]


def is_tap_name(name: str) -> bool:
    """Whether an interface name has the shape of a port's tap (tap + 8 hex - 2 hex)."""
    return re.fullmatch(r"tap[0-9a-f]{8}-[0-9a-f]{2}", name) is not None


def make_mac(suffix: bytes) -> str:
    """A port MAC in OpenStack's range from 3 random bytes: fa:16:3e:xx:xx:xx."""
    if len(suffix) != 3:
        raise ValueError("a MAC suffix is 3 bytes")
    return MAC_PREFIX + "".join(f":{b:02x}" for b in suffix)


def normalize_mac(value: str) -> str | None:
    """The MAC in lower case with colons, or None if it is not a unicast MAC-48."""
    mac = value.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        return None
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        return None  # multicast/broadcast, or all zeros: never a NIC's address
    return mac


# IANA's VRRP virtual router MACs (RFC 5798: 00:00:5e:00:01:VRID for IPv4, :02: for IPv6):
# what a redundant gateway answers from.
_VRRP_PREFIXES = ("00:00:5e:00:01:", "00:00:5e:00:02:")


def mac_reserved_reason(mac: str) -> str | None:
    """Why a (normalized, unicast) MAC may not be a port's, or None if it may: the host
    sides of the taps take fe:xx:xx:xx:xx:xx (see host_side_mac), VRRP routers theirs."""
    if mac.startswith("fe:"):
        return "MACs starting fe: are the host side of this host's taps"
    if mac.startswith(_VRRP_PREFIXES):
        return "it is in IANA's VRRP virtual router range (a gateway's)"
    return None


def host_side_mac(mac: str) -> str:
    """The tap's own MAC: the guest's with the first byte fe, as libvirt does, so the
    host side never answers for the guest's address and the bridge never takes it."""
    return "fe" + mac[2:]


class Network(BaseModel):
    """One network of this host, from configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID
    name: str = Field(min_length=1, max_length=255)
    bridge: str = Field(description="Linux bridge name (created if missing)")
    vlan: int | None = Field(default=None, ge=1, le=4094)
    physical_interface: str | None = Field(
        default=None, description="Uplink: joined to the bridge itself, or its VLAN sub-interface")
    cidr: IPv4Network
    gateway: IPv4Address | None = Field(
        default=None, description="Address of the bridge, and the guests' router; default: first host")
    host_address: IPv4Address | None = Field(
        default=None, description="A network spanning hosts: this host's own address on the "
        "bridge (a /32, for its dnsmasq), when the gateway is another host's or a router's")
    reserved_addresses: tuple[IPv4Address, ...] = Field(
        default=(), description="Addresses IPAM never gives a port (e.g. the other hosts' "
                                "host_address on a network spanning hosts)")
    mtu: int = Field(default=1500, ge=576, le=9000)
    dhcp: bool = True
    port_security: bool = Field(
        default=True, description="Bind each tap to its port's MAC and IP (nftables rules): "
                                  "a guest cannot spoof another's addresses")
    default: bool = Field(default=False, description="Attach servers created without networks")

    @field_validator("bridge", "physical_interface")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        if value is not None and (not IFNAME_RE.match(value) or value in {".", ".."}):
            raise ValueError(f"{value!r} is not a valid interface name (1-15 of A-Z a-z 0-9 _ . -)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_gateway(cls, data: Any) -> Any:
        """No gateway given: the subnet's first host (when the cidr parses at all)."""
        if isinstance(data, dict) and data.get("gateway") is None and "cidr" in data:
            try:
                net = IPv4Network(data["cidr"])
            except (ValueError, TypeError):
                return data  # the field's own validation says what is wrong
            if net.prefixlen <= 30:
                data = {**data, "gateway": net.network_address + 1}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.cidr.prefixlen > 29:
            raise ValueError(f"cidr {self.cidr}: at most a /29 (room for a gateway and guests)")
        if self.gateway is not None and (reason := reserved_reason(self, self.gateway,
                                                                   gateway_check=False)):
            raise ValueError(f"gateway {self.gateway}: {reason}")
        for name, ip in (("host_address", self.host_address),
                         *(("reserved_addresses", r) for r in self.reserved_addresses)):
            if ip is not None and (reason := reserved_reason(self, ip, gateway_check=False,
                                                             host_check=False)):
                raise ValueError(f"{name} {ip}: {reason}")
        if self.vlan is not None and self.physical_interface is None:
            raise ValueError("vlan needs physical_interface")
        if self.vlan_interface is not None and len(self.vlan_interface) > 15:
            raise ValueError(f"VLAN interface name {self.vlan_interface} is longer than 15")
        if self.physical_interface == self.bridge:
            raise ValueError("physical_interface must not be the bridge itself")
        return self

    @property
    def gateway_ip(self) -> IPv4Address:
        assert self.gateway is not None  # set by the validator
        return self.gateway

    @property
    def routes_subnet(self) -> bool:
        """Whether this host is the guests' router: its bridge holds the gateway with the
        subnet's prefix (a host route to the subnet). Not when a host_address is set apart
        from the gateway: then the bridge holds only that /32, the host is plain L2 for the
        subnet, and another host or router on the segment is the gateway."""
        return self.host_address is None or self.host_address == self.gateway

    @property
    def bridge_address(self) -> tuple[IPv4Address, int]:
        """The address (and prefix length) the bridge carries on this host."""
        if self.routes_subnet:
            return self.gateway_ip, self.cidr.prefixlen
        assert self.host_address is not None
        return self.host_address, 32

    @property
    def unallocatable(self) -> frozenset[IPv4Address]:
        """Addresses of the subnet that are no port's: the gateway, this host's address,
        the reserved ones."""
        return frozenset(ip for ip in (self.gateway, self.host_address, *self.reserved_addresses)
                         if ip is not None)

    @property
    def vlan_interface(self) -> str | None:
        """The VLAN sub-interface joined to the bridge (<physical>.<vlan>), if any."""
        if self.vlan is None or self.physical_interface is None:
            return None
        return f"{self.physical_interface}.{self.vlan}"

    @property
    def uplink(self) -> str | None:
        """What the bridge is joined to besides taps: the VLAN sub-interface, the
        physical interface itself (flat), or nothing (a host-only network)."""
        return self.vlan_interface or self.physical_interface

    @property
    def subnet_id(self) -> UUID:
        return uuid.uuid5(_SUBNET_NAMESPACE, str(self.id))

    @property
    def network_type(self) -> str:
        if self.vlan is not None:
            return "vlan"
        return "flat" if self.physical_interface else "local"


class PortStatus(StrEnum):
    DOWN = "DOWN"  # not bound, or bound but not plugged yet
    ACTIVE = "ACTIVE"  # its tap is plugged into the bridge


class Port(BaseModel):
    """One NIC: a MAC and one fixed IPv4 address on a network."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    network_id: UUID
    project_id: str
    name: str = ""
    mac: str
    ip: IPv4Address
    device_id: str = ""  # the server it is bound to ("" when free)
    device_owner: str = ""
    device_index: int = Field(default=0, ge=0)  # its place among the server's NICs
    status: PortStatus = PortStatus.DOWN
    # Made by the agent for a server's {"uuid": net} request: deleted with the server.
    # A port the user made (POST /v2.0/ports, then {"port": id}) is only detached.
    created_by_agent: bool = False
    created_at: datetime

    @property
    def tap(self) -> str:
        return tap_name(self.id)

    @property
    def bound(self) -> bool:
        return self.device_id != ""


class DhcpHost(BaseModel):
    """One static lease: this MAC gets this address."""

    model_config = ConfigDict(frozen=True)

    mac: str
    ip: IPv4Address


class NetworkRequest(BaseModel):
    """One entry of a server create's `networks`, as given (checked by the core)."""

    model_config = ConfigDict(frozen=True)

    network_id: str | None = None
    port_id: str | None = None
    fixed_ip: str | None = None


def reserved_reason(network: Network, ip: IPv4Address, *, gateway_check: bool = True,
                    host_check: bool = True) -> str | None:
    """Why `ip` cannot be a port's address on `network`, or None if it can."""
    if ip not in network.cidr:
        return f"it is not in the network's subnet {network.cidr}"
    if ip == network.cidr.network_address:
        return "it is the subnet's network address"
    if ip == network.cidr.broadcast_address:
        return "it is the subnet's broadcast address"
    if gateway_check and ip == network.gateway:
        return "it is the subnet's gateway address"
    if host_check and ip == network.host_address:
        return "it is this host's address on the network's bridge"
    if host_check and ip in network.reserved_addresses:
        return "it is one of the network's reserved addresses"
    return None


def bridge_clash(network: Network, ip: IPv4Address) -> str | None:
    """Why a port with address `ip` (allocated elsewhere: a controller's IPAM) cannot be
    plugged on this host: it is the gateway's or this host's own address on the segment."""
    if ip == network.gateway:
        return "it is the network's gateway address"
    if ip == network.host_address:
        return ("it is this host's host_address (a network spanning hosts: list every "
                "host's host_address in the controller's reserved_addresses)")
    return None


def first_free_ip(network: Network, used: Iterable[IPv4Address]) -> IPv4Address | None:
    """The lowest address of the subnet that is neither reserved nor used."""
    taken = set(used) | network.unallocatable
    for ip in network.cidr.hosts():
        if ip not in taken:
            return ip
    return None


def dhcp_hosts(ports: Iterable[Port]) -> list[DhcpHost]:
    """The static leases of a network: one per bound port, in a stable order."""
    return sorted((DhcpHost(mac=p.mac, ip=p.ip) for p in ports if p.bound),
                  key=lambda h: (int(h.ip), h.mac))
