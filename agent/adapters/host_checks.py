"""The concrete checks behind `compute-agent doctor`, and the start checks the daemon
refuses to serve without (what would fail every build); doctor runs those first."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.adapters.guestfs_appliance import time_appliance_launch
from agent.adapters.host_facts import read_host_facts
from agent.adapters.image_catalog import ManifestImageCatalog
from agent.adapters.libvirt_hypervisor import LibvirtHypervisor
from agent.adapters.netlink import host_routes
from agent.adapters.nft_guard import NftPortGuard
from agent.adapters.qemu_img import QemuImgDisks
from agent.config import Config
from agent.errors import AgentError
from agent.model.host import (
    CheckResult,
    HostRoute,
    VirtDecision,
    decide_virt_type,
    overlapping_routes,
    untraversable_folder,
)

CAP_NET_ADMIN = 12


def virt_decision(config: Config) -> VirtDecision:
    return decide_virt_type(config.virt_type, read_host_facts())


def check_libvirt(config: Config) -> CheckResult:
    name = "libvirt"
    hv = LibvirtHypervisor(config.libvirt_uri)
    try:
        version = hv.version()
        count = len(hv.domain_uuids())
    except AgentError as e:
        return CheckResult(name=name, ok=False, detail=str(e),
                           fix="start libvirtd (systemctl start libvirtd, or `libvirtd -d` "
                               "after `virtlogd -d`), or set libvirt_uri")
    finally:
        hv.close()
    return CheckResult(name=name, ok=True,
                       detail=f"{config.libvirt_uri} reachable, libvirt {version}, {count} domains")


def check_virt_type(config: Config) -> CheckResult:
    d = virt_decision(config)
    return CheckResult(name="virt type", ok=True, detail=f"{d.virt_type.value}: {d.reason}")


def check_guestfs(config: Config) -> CheckResult:
    name = "libguestfs"
    try:
        seconds = time_appliance_launch(virt_decision(config).virt_type)
    except Exception as e:  # guestfs raises RuntimeError with the appliance's message
        return CheckResult(name=name, ok=False, detail=f"appliance did not launch: {e}",
                           fix="install libguestfs-tools and python3-guestfs; run "
                               "`libguestfs-test-tool` for details")
    return CheckResult(name=name, ok=True, detail=f"appliance launched in {seconds:.1f} s")


def check_nftables(config: Config) -> CheckResult:
    """The anti-spoofing rules of port_security networks are nftables rules (bridge family)
    made through libnftables: without it their servers cannot be plugged."""
    guarded = [n.name for n in config.networks if n.port_security]
    try:
        NftPortGuard().guarded()
    except Exception as e:  # ImportError (no python3-nftables) or the kernel's refusal
        return CheckResult(name="nftables", ok=False, required=bool(guarded),
                           detail=f"cannot use nftables: {e}"
                                  + (f" (needed by {', '.join(guarded)})" if guarded else ""),
                           fix="apt-get install python3-nftables; or set port_security = "
                               "false on the network")
    return CheckResult(name="nftables", ok=True, detail="usable (anti-spoofing rules)")


def check_qemu_img(_config: Config) -> CheckResult:
    try:
        version = QemuImgDisks().version()
    except AgentError as e:
        return CheckResult(name="qemu-img", ok=False, detail=str(e), fix="apt-get install qemu-utils")
    return CheckResult(name="qemu-img", ok=True, detail=version)


def check_dnsmasq(_config: Config) -> CheckResult:
    path = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists()
                                       else None)
    if not path:
        return CheckResult(name="dnsmasq", ok=False, detail="not found",
                           fix="apt-get install dnsmasq-base")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                         check=False)
    return CheckResult(name="dnsmasq", ok=out.returncode == 0,
                       detail=(out.stdout.splitlines() or ["?"])[0])


def check_net_admin(_config: Config) -> CheckResult:
    cap_eff = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            cap_eff = int(line.split()[1], 16)
    ok = bool(cap_eff & (1 << CAP_NET_ADMIN))
    return CheckResult(name="CAP_NET_ADMIN", ok=ok,
                       detail="held" if ok else "missing: cannot make bridges and taps",
                       fix="run as root, or grant CAP_NET_ADMIN (AmbientCapabilities=)")


def check_images(config: Config) -> CheckResult:
    images = ManifestImageCatalog(*config.image_dirs).list()
    dirs = ", ".join(str(d) for d in config.image_dirs)
    missing = [i.name for i in images if not i.disk_file.exists()]
    if not images or missing:
        return CheckResult(name="images", ok=False,
                           detail=f"no usable image in {dirs}" if not images
                           else f"disk missing for {', '.join(missing)}",
                           fix="build the test image (`make images`) or set image_dirs")
    names = ", ".join(sorted(i.name for i in images))
    return CheckResult(name="images", ok=True, detail=f"{len(images)} in {dirs}: {names}")


def folder_mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        return None


def check_state_dir_reachable(config: Config,
                              mode_of: Callable[[Path], int | None] | None = None) -> CheckResult:
    name = "state dir"
    mode_of = mode_of or folder_mode
    folder = untraversable_folder(config.state_dir, mode_of)
    if folder is not None:
        mode = mode_of(folder) or 0
        return CheckResult(
            name=name, ok=False,
            detail=f"{folder} (mode {mode & 0o7777:04o}) is not world-traversable: QEMU "
                   f"(libvirt-qemu) and dnsmasq run unprivileged and cannot reach the guest "
                   f"disks, console sockets and DHCP files under {config.state_dir}",
            fix=f"chmod o+x {folder}, or set state_dir under a folder every user can traverse")
    return CheckResult(name=name, ok=True,
                       detail=f"{config.state_dir}: every folder above it is world-traversable")


def check_subnets(config: Config,
                  routes: Callable[[], Sequence[HostRoute]] | None = None) -> CheckResult:
    name = "subnets"
    routes = routes or host_routes
    if not config.networks:
        return CheckResult(name=name, ok=True, detail="no networks configured")
    try:
        found = list(routes())
    except AgentError as e:
        return CheckResult(name=name, ok=False, detail=str(e),
                           fix="run as root (netlink), or on a host with IPv4 routing")
    clashes = [f"network {n.name} ({n.cidr}) overlaps the host route {r.destination}"
               f"{' on ' + r.interface if r.interface else ''}"
               for n in config.networks if n.routes_subnet
               for r in overlapping_routes(n.cidr, n.bridge, found)]
    if clashes:
        return CheckResult(name=name, ok=False,
                           detail="; ".join(clashes) + ": its guests could not be reached",
                           fix="give the network a subnet no host route covers")
    routed = sum(n.routes_subnet for n in config.networks)
    return CheckResult(name=name, ok=True, detail=f"{routed} routed network(s), none overlaps "
                       f"a host route; {len(config.networks) - routed} L2-only (host_address)")


def start_checks(config: Config) -> list[tuple[str, Callable[[], CheckResult]]]:
    """What would fail every build: the daemon refuses to start on any of these."""
    return [("state dir", lambda: check_state_dir_reachable(config)),
            ("subnets", lambda: check_subnets(config))]


def host_checks(config: Config, *, guestfs: bool = True) -> list[tuple[str, Callable[[], CheckResult]]]:
    checks = [
        ("libvirt", check_libvirt), ("virt type", check_virt_type),
        ("libguestfs", check_guestfs), ("qemu-img", check_qemu_img), ("nftables", check_nftables),
        ("dnsmasq", check_dnsmasq), ("CAP_NET_ADMIN", check_net_admin), ("images", check_images),
    ]
    found = start_checks(config) + [(name, lambda c=check: c(config)) for name, check in checks
                                    if guestfs or name != "libguestfs"]
    if config.amqp is not None:  # fleet mode: no broker, no jobs
        # Imported here: single-host mode never loads the AMQP client.
        from agent.adapters.amqp_probe import check_broker

        amqp = config.amqp
        found.append(("broker", lambda: check_broker(amqp, config.fleet_host)))
    return found
