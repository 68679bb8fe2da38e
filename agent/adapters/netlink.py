"""The NetPlumber port with pyroute2 (netlink), os-vif style: the agent makes each tap
itself and libvirt only opens it (<interface type='ethernet'><target managed='no'/>).

This small module is the only place that changes links on the host, and it needs root
(CAP_NET_ADMIN). It never runs `ip`. Every call is idempotent: it creates what is missing,
sets what differs, and leaves the rest alone; it refuses to touch an interface of the
wrong kind that happens to carry one of our names.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

from agent.errors import NetworkError
from agent.model.host import HostRoute
from agent.model.network import Network, Port, host_side_mac

if TYPE_CHECKING:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

Link = Any  # pyroute2's ifinfmsg


def _load_pyroute2() -> None:
    """Import pyroute2 on first use (it is ~160 modules and megabytes of memory): a host
    with no networks configured never does. Sets this module's IPRoute and NetlinkError."""
    global IPRoute, NetlinkError
    if "IPRoute" not in globals():
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
MAIN_TABLE = 254


def _kind(link: Link) -> str | None:
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return str(kind) if kind is not None else None


class NetlinkPlumber:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def _ipr(self, what: str) -> Iterator[IPRoute]:
        """A netlink socket for one operation; netlink errors become NetworkError."""
        _load_pyroute2()
        try:
            with self._lock, IPRoute() as ipr:
                yield ipr
        except NetlinkError as e:
            raise NetworkError(f"{what}: {e.args[1] if len(e.args) > 1 else e} "
                               f"(errno {e.code})") from None
        except OSError as e:  # no netlink at all, or not allowed
            raise NetworkError(f"{what}: {e.strerror or e}") from None

    @staticmethod
    def _get(ipr: IPRoute, name: str) -> Link | None:
        found = ipr.link_lookup(ifname=name)
        return ipr.link("get", index=found[0])[0] if found else None

    @staticmethod
    def _set(ipr: IPRoute, link: Link, **want: Any) -> None:
        """Set only the attributes that differ (state is always asked for: cheap)."""
        current = {"mtu": link.get("IFLA_MTU"), "master": link.get("IFLA_MASTER"),
                   "address": link.get("IFLA_ADDRESS")}
        changes = {k: v for k, v in want.items() if k == "state" or current.get(k) != v}
        if changes:
            ipr.link("set", index=link["index"], **changes)

    def _ensure(self, ipr: IPRoute, name: str, kind: str, **create: Any) -> Link:
        link = self._get(ipr, name)
        if link is None:
            try:
                ipr.link("add", ifname=name, kind=kind, **create)
            except NetlinkError as e:
                if e.code != errno.EEXIST:  # made meanwhile by someone else: check it below
                    raise
            link = self._get(ipr, name)
            if link is None:
                raise NetworkError(f"{name} vanished right after it was made")
        want_kind = "tun" if kind == "tuntap" else kind
        if _kind(link) != want_kind:
            raise NetworkError(f"{name} exists but is not a {want_kind} device "
                               f"({_kind(link) or 'no kind'}): not touching it")
        return link

    # -- the port -----------------------------------------------------------------------
    def ensure_bridge(self, network: Network) -> None:
        with self._ipr(f"bridge {network.bridge}") as ipr:
            fresh = self._get(ipr, network.bridge) is None
            bridge = self._ensure(ipr, network.bridge, "bridge", br_stp_state=0,
                                  br_forward_delay=0)
            if fresh:
                # Pin the bridge's (random) MAC: otherwise it follows the lowest MAC among
                # its ports and changes as taps come and go, staling the guests' ARP caches.
                ipr.link("set", index=bridge["index"], address=bridge.get("IFLA_ADDRESS"))
            self._set(ipr, bridge, mtu=network.mtu, state="up")
            self._ensure_bridge_address(ipr, bridge["index"], network)
            if network.uplink is not None:
                self._ensure_uplink(ipr, bridge["index"], network)

    @staticmethod
    def _ensure_bridge_address(ipr: IPRoute, index: int, network: Network) -> None:
        address, prefixlen = network.bridge_address
        have = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)}
        for other, other_len in have - {(str(address), prefixlen)}:
            # An address of the subnet we no longer want: e.g. the gateway of a host whose
            # config now says host_address (two gateways on a segment would fight).
            # Addresses outside the subnet are the operator's: left alone.
            if IPv4Address(other) in network.cidr:
                ipr.addr("del", index=index, address=other, prefixlen=other_len)
        if (str(address), prefixlen) in have:
            return
        try:
            ipr.addr("add", index=index, address=str(address), prefixlen=prefixlen)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise

    def _ensure_uplink(self, ipr: IPRoute, bridge_index: int, network: Network) -> None:
        assert network.physical_interface is not None
        parent = self._get(ipr, network.physical_interface)
        if parent is None:
            raise NetworkError(f"physical interface {network.physical_interface} of network "
                               f"{network.name} does not exist")
        if network.vlan_interface is None:
            if parent.get("IFLA_MASTER") not in (None, bridge_index):
                raise NetworkError(f"{network.physical_interface} is in another bridge")
            if parent.get("IFLA_MASTER") is None and ipr.get_addr(index=parent["index"], family=2):
                raise NetworkError(f"{network.physical_interface} has IPv4 addresses: move them "
                                   f"to {network.bridge} before joining it to the bridge")
            self._set(ipr, parent, master=bridge_index, state="up")
            return
        self._set(ipr, parent, state="up")
        vlan = self._ensure(ipr, network.vlan_interface, "vlan", link=parent["index"],
                            vlan_id=network.vlan)
        info = vlan.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        vlan_id = info.get("IFLA_VLAN_ID") if info is not None else None
        if vlan.get("IFLA_LINK") != parent["index"] or vlan_id != network.vlan:
            raise NetworkError(f"{network.vlan_interface} exists with another parent or VLAN id")
        self._set(ipr, vlan, mtu=network.mtu, master=bridge_index, state="up")

    def plug(self, port: Port, network: Network) -> None:
        with self._ipr(f"plug {port.tap}") as ipr:
            bridge = self._get(ipr, network.bridge)
            if bridge is None or _kind(bridge) != "bridge":
                raise NetworkError(f"bridge {network.bridge} does not exist")
            tap = self._ensure(ipr, port.tap, "tuntap", mode="tap")
            self._set(ipr, tap, address=host_side_mac(port.mac), mtu=network.mtu,
                      master=bridge["index"], state="up")

    def unplug(self, tap: str) -> None:
        with self._ipr(f"unplug {tap}") as ipr:
            link = self._get(ipr, tap)
            if link is None:
                return
            if _kind(link) != "tun":
                raise NetworkError(f"{tap} is not a tap ({_kind(link) or 'no kind'}): not removing it")
            try:
                ipr.link("del", index=link["index"])
            except NetlinkError as e:
                if e.code != errno.ENODEV:  # gone meanwhile: fine
                    raise

    def tap_exists(self, tap: str) -> bool:
        with self._ipr(f"look up {tap}") as ipr:
            link = self._get(ipr, tap)
            return link is not None and _kind(link) == "tun"

    def bridge_members(self, bridge: str) -> set[str]:
        with self._ipr(f"list ports of {bridge}") as ipr:
            link = self._get(ipr, bridge)
            if link is None:
                return set()
            return {str(m.get("IFLA_IFNAME")) for m in ipr.get_links()
                    if m.get("IFLA_MASTER") == link["index"]}


def host_routes() -> list[HostRoute]:
    """The host's IPv4 routes of the main table, each with its interface's name (read
    only: the start checks compare them with the configured subnets). pyroute2's
    IPRoute cannot be made in a thread whose event loop runs (it runs one of its own):
    the daemon's start checks run in its loop, so the read goes to a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _read_host_routes()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-routes") as pool:
        return pool.submit(_read_host_routes).result()


def _read_host_routes() -> list[HostRoute]:
    _load_pyroute2()
    try:
        with IPRoute() as ipr:
            names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
            routes = ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
    except (NetlinkError, OSError) as e:
        raise NetworkError(f"cannot read the host's routes: {e}") from None
    # A route without RTA_DST is a default route (destination 0, length 0).
    return [HostRoute(destination=IPv4Network((r.get("RTA_DST") or 0, r["dst_len"]), strict=False),
                      interface=names.get(r.get("RTA_OIF")) or "")
            for r in routes]
