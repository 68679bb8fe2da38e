"""Networks and ports as the API sees them: the catalog of configured networks, the port
registry, and IPAM (which address a new port gets, and which requested ones are refused).

Allocation is decided here and committed by the store, whose UNIQUE constraints make it
atomic: a server's ports are committed in the same transaction as the server itself.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address, ip_address
from uuid import UUID

from agent.errors import (
    InvalidInput,
    IpAddressInUse,
    MacAddressInUse,
    NetworkNotFound,
    NoMoreAddresses,
    PortInUse,
    PortNotFound,
    PortQuotaExceeded,
    QuotaExceeded,
)
from agent.model.network import (
    DEVICE_OWNER,
    MAX_NICS,
    Network,
    NetworkRequest,
    Port,
    first_free_ip,
    mac_reserved_reason,
    make_mac,
    normalize_mac,
    reserved_reason,
)
from agent.model.requests import Limits, RequestContext
from agent.protocols import Store

MAC_ATTEMPTS = 16


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def normalize_and_check_mac(mac: str) -> str:
    """A user's MAC, normalized; 400 unless unicast and outside the reserved ranges."""
    given = normalize_mac(mac)
    if given is None:
        raise InvalidInput(f"Invalid input for mac_address. Reason: '{mac[:40]}' is not "
                           "a valid unicast MAC address.", "mac_address")
    reason = mac_reserved_reason(given)
    if reason is not None:
        raise InvalidInput(f"Invalid input for mac_address. Reason: '{given}' is reserved: "
                           f"{reason}.", "mac_address")
    return given


class NetworkCatalog:
    """The networks of this host, from configuration."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self._by_id = {n.id: n for n in networks}

    def list(self) -> list[Network]:
        return list(self._by_id.values())

    def find(self, network_id: UUID | str) -> Network | None:
        key = network_id if isinstance(network_id, UUID) else _uuid(network_id)
        return self._by_id.get(key) if key is not None else None

    def get(self, network_id: UUID | str) -> Network:
        network = self.find(network_id)
        if network is None:
            raise NetworkNotFound(f"Network {str(network_id)[:64]} could not be found.")
        return network

    def defaults(self) -> list[Network]:
        return [n for n in self._by_id.values() if n.default]


class PortService:
    def __init__(self, store: Store, catalog: NetworkCatalog,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 limits: Limits | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.max_ports = (limits or Limits()).max_total_ports
        # Held from a quota/address check to its commit (ServerService shares it).
        self.allocating = asyncio.Lock()
        self.now = now
        self.random_bytes = random_bytes

    # -- reads ------------------------------------------------------------------------
    def list_ports(self, ctx: RequestContext, *, network_id: str | None = None,
                   device_id: str | None = None) -> list[Port]:
        """The caller's ports (an admin's: all), filtered; an id that is no UUID matches none."""
        net = None
        if network_id is not None:
            net = _uuid(network_id)
            if net is None:
                return []
        return self.store.list_ports(network_id=net, device_id=device_id,
                                     project_id=None if ctx.is_admin else ctx.project_id)

    def get_port(self, ctx: RequestContext, port_id: str) -> Port:
        key = _uuid(port_id)
        port = self.store.get_port(key) if key is not None else None
        if port is None or not (ctx.is_admin or port.project_id == ctx.project_id):
            raise PortNotFound(f"Port {port_id[:64]} could not be found.")
        return port

    def nics(self, server_ids: Iterable[UUID]) -> dict[UUID, list[tuple[Network | None, Port]]]:
        """Each server's NICs in order: (its network, or None if no longer configured; port)."""
        wanted = {str(i): i for i in server_ids}
        out: dict[UUID, list[tuple[Network | None, Port]]] = {i: [] for i in wanted.values()}
        if not wanted:
            return out
        ports = (self.store.list_ports(device_id=next(iter(wanted))) if len(wanted) == 1
                 else self.store.list_ports())
        for port in ports:
            if port.device_id in wanted:
                out[wanted[port.device_id]].append((self.catalog.find(port.network_id), port))
        return out

    def ports_used(self, project_id: str) -> int:
        """How many ports the project holds (bound or not): what its port quota counts."""
        return len(self.store.list_ports(project_id=project_id))

    # -- the port registry ----------------------------------------------------------------
    async def create_port(self, ctx: RequestContext, network_id: str, *, fixed_ip: str | None = None,
                          mac: str | None = None, name: str = "") -> Port:
        async with self.allocating:
            return await self._create_port(ctx, network_id, fixed_ip, mac, name)

    async def _create_port(self, ctx: RequestContext, network_id: str, fixed_ip: str | None,
                           mac: str | None, name: str) -> Port:
        network = self.catalog.get(network_id)
        # Neutron's order: the input's form (400), the quota (409), then what is taken (409).
        given_mac = normalize_and_check_mac(mac) if mac is not None else None
        if self.ports_used(ctx.project_id) + 1 > self.max_ports:
            raise PortQuotaExceeded("Quota exceeded for resources: ['port'].")
        ip = self._pick_ip(network, fixed_ip, set(), "fixed_ips")
        if given_mac is not None and any(p.mac == given_mac for p in self.store.list_ports()):
            # The store's UNIQUE constraint still decides a race.
            raise MacAddressInUse(f"Unable to complete operation for network {network.id}. "
                                  f"The mac address {given_mac} is in use.")
        mac = given_mac
        port = Port(id=uuid.uuid4(), network_id=network.id, project_id=ctx.project_id, name=name,
                    mac=mac or self._new_mac(set()), ip=ip, created_at=self.now())
        await self.store.add_port(port)
        return port

    async def delete_port(self, ctx: RequestContext, port_id: str) -> None:
        port = self.get_port(ctx, port_id)
        await self.store.delete_port(port.id)

    # -- a server's NICs ----------------------------------------------------------------
    def plan_servers_ports(self, ctx: RequestContext, requests: Sequence[NetworkRequest] | None,
                           server_ids: Sequence[UUID]) -> list[list[Port]]:
        """plan_server_ports for several servers made together (a multi-create): no two of
        them get the same address or MAC; NoMoreAddresses if they do not all fit."""
        ips: dict[UUID, set[IPv4Address]] = {}
        macs: set[str] = set()
        return [self.plan_server_ports(ctx, requests, i, planned_ips=ips, planned_macs=macs)
                for i in server_ids]

    def plan_server_ports(self, ctx: RequestContext, requests: Sequence[NetworkRequest] | None,
                          server_id: UUID, *, planned_ips: dict[UUID, set[IPv4Address]] | None = None,
                          planned_macs: set[str] | None = None) -> list[Port]:
        """The ports a new server gets, in NIC order, for the store to commit with it: new
        ones for {"uuid": net[, "fixed_ip": ip]}, the user's own bound for {"port": id}.
        None (networks absent or "auto") means the networks marked default, if any.
        `planned_ips`/`planned_macs`: taken by servers planned before it, not yet stored
        (updated with this server's)."""
        if requests is None:
            requests = [NetworkRequest(network_id=str(n.id)) for n in self.catalog.defaults()]
        if len(requests) > MAX_NICS:
            raise InvalidInput(f"At most {MAX_NICS} networks per server.", "networks")
        planned: dict[int, Port] = {}
        ips = planned_ips if planned_ips is not None else {}
        seen_ports: set[UUID] = set()
        earlier_new_ports = sum(len(taken) for taken in ips.values())
        # Requested addresses first, so that no automatic one takes them.
        order = sorted(range(len(requests)), key=lambda i: requests[i].fixed_ip is None)
        for index in order:
            req = requests[index]
            if req.port_id is not None:
                planned[index] = self._bind_user_port(ctx, req, index, server_id, seen_ports)
                continue
            network = self._requested_network(req)
            taken = ips.setdefault(network.id, set())
            try:
                ip = self._pick_ip(network, req.fixed_ip, taken, "networks")
            except IpAddressInUse:
                # Nova turns Neutron's 409 into FixedIpAlreadyInUse: a 400 for a create.
                raise InvalidInput(f"Fixed IP address {req.fixed_ip} is already in use on "
                                   f"instance {server_id}.", "networks") from None
            taken.add(ip)
            planned[index] = Port(
                id=uuid.uuid4(), network_id=network.id, project_id=ctx.project_id, mac="",
                ip=ip, device_id=str(server_id), device_owner=DEVICE_OWNER, device_index=index,
                created_by_agent=True, created_at=self.now())
        # The quota counts the new ports of servers planned before this one in the same
        # request (multi-create): each of them took one address in `ips`.
        self._check_port_quota(ctx, earlier_new_ports + sum(p.created_by_agent for p in planned.values()))
        macs = planned_macs if planned_macs is not None else set()
        out = []
        for index in sorted(planned):
            port = planned[index]
            if not port.mac:
                port = port.model_copy(update={"mac": self._new_mac(macs)})
            macs.add(port.mac)
            out.append(port)
        return out

    def _check_port_quota(self, ctx: RequestContext, new: int) -> None:
        """The server's new ports (a user's own is counted already) within the quota."""
        used = self.ports_used(ctx.project_id)
        if new and used + new > self.max_ports:
            # Nova's PortLimitExceeded (403) when Neutron refuses the ports of a create.
            raise QuotaExceeded(f"Maximum number of ports exceeded: the project has {used} of "
                                f"{self.max_ports} ports and the server needs {new} more.")

    def _requested_network(self, req: NetworkRequest) -> Network:
        if req.network_id is None:
            raise InvalidInput("Bad networks format: each network needs a 'uuid' or a 'port'.",
                               "networks")
        if _uuid(req.network_id) is None:
            raise InvalidInput(f"Bad networks format: network uuid is not in proper format "
                               f"({req.network_id[:64]})", "networks")
        network = self.catalog.find(req.network_id)
        if network is None:
            raise InvalidInput(f"Network {req.network_id} could not be found.", "networks")
        return network

    def _bind_user_port(self, ctx: RequestContext, req: NetworkRequest, index: int,
                        server_id: UUID, seen: set[UUID]) -> Port:
        assert req.port_id is not None
        if req.fixed_ip is not None:
            raise InvalidInput(f"Specified Fixed IP '{req.fixed_ip[:64]}' cannot be used with port "
                               f"'{req.port_id[:64]}': the two cannot be specified together.",
                               "networks")
        try:
            port = self.get_port(ctx, req.port_id)
        except PortNotFound as e:
            raise InvalidInput(str(e), "networks") from None
        if port.id in seen:
            raise InvalidInput(f"Port {port.id} is requested more than once.", "networks")
        seen.add(port.id)
        if port.bound:
            raise PortInUse(f"Port {port.id} is still in use.")
        if req.network_id is not None and _uuid(req.network_id) != port.network_id:
            raise InvalidInput(f"Port {port.id} is not on network {req.network_id[:64]}.",
                               "networks")
        if self.catalog.find(port.network_id) is None:
            raise InvalidInput(f"Network {port.network_id} of port {port.id} could not be found.",
                               "networks")
        return port.model_copy(update={"device_id": str(server_id), "device_owner": DEVICE_OWNER,
                                       "device_index": index})

    # -- IPAM -----------------------------------------------------------------------------
    def _pick_ip(self, network: Network, requested: str | None, planned: set[IPv4Address],
                 field: str) -> IPv4Address:
        used = {p.ip for p in self.store.list_ports(network_id=network.id)} | planned
        if requested is None:
            ip = first_free_ip(network, used)
            if ip is None:
                raise NoMoreAddresses(f"No more IP addresses available on network {network.id}.")
            return ip
        try:
            ip = ip_address(requested)
        except ValueError:
            raise InvalidInput(f"Invalid fixed IP address {requested[:64]!r}: not an IP address.",
                               field) from None
        if not isinstance(ip, IPv4Address):
            raise InvalidInput(f"Fixed IP address {ip} is not valid for network {network.id}: the "
                               "network has an IPv4 subnet only.", field)
        reason = reserved_reason(network, ip)
        if reason is not None:
            raise InvalidInput(f"Fixed IP address {ip} is not valid for network {network.id}: "
                               f"{reason}.", field)
        if ip in used:
            raise IpAddressInUse(f"Unable to complete operation for network {network.id}. "
                                 f"The IP address {ip} is in use.")
        return ip

    def _new_mac(self, planned: set[str]) -> str:
        used = {p.mac for p in self.store.list_ports()} | planned
        for _ in range(MAC_ATTEMPTS):
            mac = make_mac(self.random_bytes(3))
            if mac not in used:
                return mac
        raise NoMoreAddresses("Could not generate a free MAC address.")
