"""Network plumbing (bridges, taps, anti-spoofing) and DHCP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from agent.model.network import DhcpHost, Network, Port


class NetPlumber(Protocol):
    """Bridges and taps on this host (os-vif style). Every call is idempotent: it makes
    what is missing, repairs what differs, and leaves what is right alone."""

    def ensure_bridge(self, network: Network) -> None:
        """The bridge exists and is up with the network's MTU and bridge_address, joined
        to its uplink (VLAN sub-interface or physical interface) if it has one."""
        ...

    def plug(self, port: Port, network: Network) -> None:
        """The port's tap exists, with the network's MTU, in the network's bridge, up."""
        ...

    def unplug(self, tap: str) -> None:
        """The tap is gone (a missing one is fine)."""
        ...

    def tap_exists(self, tap: str) -> bool: ...

    def bridge_members(self, bridge: str) -> set[str]:
        """Names of the interfaces in the bridge (empty when there is no such bridge)."""
        ...


class PortGuard(Protocol):
    """Anti-spoofing: frames entering a bridge from a guarded port's tap pass only from
    the port's MAC and IPv4 address (DHCP and ARP included). Idempotent, as NetPlumber."""

    def guard(self, port: Port) -> None:
        """The port's tap is bound to its MAC and IP (before or after the tap exists)."""
        ...

    def unguard(self, tap: str) -> None:
        """The tap's rules are gone (none is fine)."""
        ...


class Dhcp(Protocol):
    """One DHCP server per network, with static leases only."""

    def sync(self, network: Network, hosts: Sequence[DhcpHost]) -> None:
        """Serve exactly these leases on the network's bridge: start the server if it is
        not running, reload it when hosts changed; leases of hosts no longer listed are
        dropped."""
        ...

    def revive(self) -> list[UUID]:
        """Restart every server that was synced and has died since; their networks."""
        ...

    def stop_unknown(self, known: set[UUID]) -> list[UUID]:
        """Stop servers (and remove the files) of networks not in `known`; which."""
        ...

    def stop_all(self) -> None: ...
