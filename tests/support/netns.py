"""Test networks on the real host, within the test traffic rule (docs/host-notes.md):
bridges with no uplink, no forwarding or NAT, traffic only between our guests, our dnsmasq
and network namespaces made here; every ping bounded in count and time.

Every bridge, veth and namespace is named `catest<tag>...` with a tag unique to one
`TestNet`; `cleanup()` removes them all (and any tap left in our bridges, with its
anti-spoofing rules), also after a failed test. Addresses are in 10.213.0.0/16.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from ipaddress import IPv4Network
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns

from agent.adapters.nft_guard import NftPortGuard
from agent.model.network import Network

PREFIX = "catest"
# 3 packets, 20 s at most: a TCG guest on a loaded host may answer seconds late.
PING = ["busybox", "ping", "-c", "3", "-W", "5", "-w", "20"]


class TestNet:
    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or os.urandom(2).hex()
        self.namespaces: list[str] = []
        self.bridges: list[str] = []

    def name(self, role: str) -> str:
        name = f"{PREFIX}{self.tag}{role}"
        assert len(name) <= 15, name
        return name

    def network(self, n: int, cidr: str, **kw: object) -> Network:
        """A network of this test: bridge catest<tag>b<n>, cleaned up afterwards."""
        bridge = self.name(f"b{n}")
        self.bridges.append(bridge)
        return Network(**{"id": uuid.uuid4(), "name": f"{PREFIX}-net{n}", "bridge": bridge,
                          "cidr": cidr, **kw})

    def namespace_on(self, network: Network, host: int | None = None) -> tuple[str, str]:
        """A namespace joined to the network's bridge by a veth, its end at the subnet's
        host number `host` (default: the third from the top, which IPAM hands out last):
        (namespace name, its address)."""
        n = len(self.namespaces)
        ns, outer, inner = self.name(f"ns{n}"), self.name(f"v{n}"), self.name(f"p{n}")
        cidr = IPv4Network(network.cidr)
        address = str(cidr[cidr.num_addresses - 3 if host is None else host])
        netns.create(ns)
        self.namespaces.append(ns)
        with IPRoute() as ipr:
            ipr.link("add", ifname=outer, kind="veth", peer={"ifname": inner, "net_ns_fd": ns})
            bridge = ipr.link_lookup(ifname=network.bridge)[0]
            ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], master=bridge, state="up")
        with NetNS(ns) as nsr:
            index = nsr.link_lookup(ifname=inner)[0]
            nsr.addr("add", index=index, address=address, prefixlen=network.cidr.prefixlen)
            nsr.link("set", index=index, state="up")
            nsr.link("set", index=nsr.link_lookup(ifname="lo")[0], state="up")
        return ns, address

    def switch(self, n: int, ports: int) -> list[str]:
        """A test "switch": bridge catest<tag>sw<n> with `ports` veth pairs
        (catest<tag>s<i>n<n> in the switch, catest<tag>u<i>n<n> left free): the free ends,
        each the `physical_interface` (uplink) of one host's bridge, so those bridges form
        one L2 segment as hosts on one physical network would. No address, no forwarding."""
        switch = self.name(f"swn{n}")
        self.bridges.append(switch)
        uplinks = []
        with IPRoute() as ipr:
            ipr.link("add", ifname=switch, kind="bridge", br_stp_state=0, br_forward_delay=0)
            ipr.link("set", index=ipr.link_lookup(ifname=switch)[0], state="up")
            for i in range(ports):
                inner, uplink = self.name(f"s{i}n{n}"), self.name(f"u{i}n{n}")
                ipr.link("add", ifname=inner, kind="veth", peer={"ifname": uplink})
                ipr.link("set", index=ipr.link_lookup(ifname=inner)[0],
                         master=ipr.link_lookup(ifname=switch)[0], state="up")
                uplinks.append(uplink)
        return uplinks

    def set_mac(self, ns: str, mac: str) -> str:
        """Give the namespace's veth end this MAC (to ask DHCP as a port would); its name."""
        inner = self.name(f"p{self.namespaces.index(ns)}")
        with NetNS(ns) as nsr:
            index = nsr.link_lookup(ifname=inner)[0]
            nsr.link("set", index=index, state="down")
            nsr.link("set", index=index, address=mac, state="up")
        return inner

    @staticmethod
    def run_in(ns: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def ping(self, ns: str, address: str) -> subprocess.CompletedProcess[str]:
        assert address.startswith("10.213."), f"test pings stay in 10.213.0.0/16, not {address}"
        return self.run_in(ns, *PING, address, timeout=20)

    def cleanup(self) -> None:
        for ns in self.namespaces:
            with contextlib.suppress(Exception):
                netns.remove(ns)  # takes the veth pair with it
        with IPRoute() as ipr:
            for bridge in self.bridges:
                for index in ipr.link_lookup(ifname=bridge):
                    for member in ipr.get_links():
                        name = str(member.get("IFLA_IFNAME"))
                        if member.get("IFLA_MASTER") == index and name.startswith("tap"):
                            with contextlib.suppress(Exception):
                                ipr.link("del", index=member["index"])
                            with contextlib.suppress(Exception):  # a killed daemon's rules
                                NftPortGuard().unguard(name)
            for link in ipr.get_links():
                if str(link.get("IFLA_IFNAME")).startswith(f"{PREFIX}{self.tag}"):
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=link["index"])


def dnsmasq_pids_under(state_dir: Path) -> list[int]:
    """Every dnsmasq whose files are under `state_dir`."""
    marker = f"--pid-file={state_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[0].endswith(b"dnsmasq") and any(a.startswith(marker) for a in cmdline):
            found.append(int(proc.name))
    return found


def kill_dnsmasq_under(state_dir: Path) -> list[int]:
    """End every dnsmasq under `state_dir` (a daemon killed with -9 leaves them running)."""
    killed = dnsmasq_pids_under(state_dir)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and set(dnsmasq_pids_under(state_dir)) & set(killed):
        time.sleep(0.05)
    return killed
