"""The fleet's scheduler (issue 12): which host a new server goes to. Pure functions over
plain values (core/placement.py reads the store and the host registry into them).

As Nova's filter scheduler: filters drop the hosts that cannot take the server (down or
disabled, image absent, not enough vCPUs/RAM/disk within the allocation ratios, a hard
server group policy), then weighers order the rest. The order is lexicographic, first
key first: a soft group policy (members on the host: most first for soft-affinity,
fewest first for soft-anti-affinity), then the project's own servers on the host (fewest
first: the spec's "spreads customer VMs across hosts"), then free RAM (most first), then
the host's name (so equal hosts are picked in a stable order)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.errors import NoValidHost
from agent.model.scheduling import GroupPolicy, SchedulerSettings


@dataclass(frozen=True)
class HostState:
    """One host as the scheduler sees it for one request."""

    name: str
    up: bool
    enabled: bool
    images: frozenset[str]  # image ids (and names) present on the host
    vcpus: int
    ram_mb: int
    disk_gb: int
    vcpus_used: int = 0
    ram_mb_used: int = 0
    disk_gb_used: int = 0
    project_servers: int = 0  # servers of the requesting project on the host
    group_members: int = 0  # members of the request's server group on the host

    @property
    def free_ram_mb(self) -> int:
        return self.ram_mb - self.ram_mb_used


@dataclass(frozen=True)
class PlacementRequest:
    """What one server needs."""

    vcpus: int
    ram_mb: int
    disk_gb: int
    image_keys: frozenset[str]  # the image's id (and name): present if a host has any
    group_policy: GroupPolicy | None = None
    # Hosts the group's members are on (any host with group_members > 0 counts as well).
    group_hosts: frozenset[str] = field(default_factory=frozenset)


class NoFittingHost(NoValidHost):
    """NoValidHost with what each filter left (for the log, as Nova logs "Filter results");
    the user sees Nova's fault text only."""

    def __init__(self, filter_results: Sequence[tuple[str, int, int]]) -> None:
        super().__init__()
        self.filter_results = tuple(filter_results)

    def describe(self) -> str:
        return ", ".join(f"{name}: (start: {start}, end: {end})"
                         for name, start, end in self.filter_results)


Filter = Callable[[HostState, PlacementRequest, SchedulerSettings], bool]


def compute_filter(host: HostState, _req: PlacementRequest, _s: SchedulerSettings) -> bool:
    """Up (heartbeats arriving) and enabled (not disabled through /os-services)."""
    return host.up and host.enabled


def image_filter(host: HostState, req: PlacementRequest, _s: SchedulerSettings) -> bool:
    return bool(host.images & req.image_keys)


def _fits(total: int, used: int, ratio: float, wanted: int) -> bool:
    return used + wanted <= total * ratio


def core_filter(host: HostState, req: PlacementRequest, s: SchedulerSettings) -> bool:
    return _fits(host.vcpus, host.vcpus_used, s.cpu_allocation_ratio, req.vcpus)


def ram_filter(host: HostState, req: PlacementRequest, s: SchedulerSettings) -> bool:
    return _fits(host.ram_mb, host.ram_mb_used, s.ram_allocation_ratio, req.ram_mb)


def disk_filter(host: HostState, req: PlacementRequest, s: SchedulerSettings) -> bool:
    return _fits(host.disk_gb, host.disk_gb_used, s.disk_allocation_ratio, req.disk_gb)


def _group_hosts(req: PlacementRequest, hosts: Sequence[HostState]) -> frozenset[str]:
    return req.group_hosts | {h.name for h in hosts if h.group_members > 0}


def affinity_filter(host: HostState, req: PlacementRequest, _s: SchedulerSettings,
                    group_hosts: frozenset[str] = frozenset()) -> bool:
    """affinity: once the group has a host, only that host; anti-affinity: only hosts
    without a member. Soft policies never filter."""
    if req.group_policy is GroupPolicy.AFFINITY:
        return not group_hosts or host.name in group_hosts
    if req.group_policy is GroupPolicy.ANTI_AFFINITY:
        return host.name not in group_hosts
    return True


FILTERS: tuple[tuple[str, Filter], ...] = (
    ("ComputeFilter", compute_filter),
    ("ImagePropertiesFilter", image_filter),
    ("CoreFilter", core_filter),
    ("RamFilter", ram_filter),
    ("DiskFilter", disk_filter),
)


def filter_hosts(hosts: Sequence[HostState], req: PlacementRequest,
                 settings: SchedulerSettings) -> tuple[list[HostState], list[tuple[str, int, int]]]:
    """The hosts every filter passes, and (filter, hosts before, hosts after) of each."""
    group_hosts = _group_hosts(req, hosts)
    left = list(hosts)
    results: list[tuple[str, int, int]] = []
    steps: list[tuple[str, Filter]] = list(FILTERS)
    if req.group_policy in (GroupPolicy.AFFINITY, GroupPolicy.ANTI_AFFINITY):
        name = ("ServerGroupAffinityFilter" if req.group_policy is GroupPolicy.AFFINITY
                else "ServerGroupAntiAffinityFilter")
        steps.append((name, lambda h, r, s: affinity_filter(h, r, s, group_hosts)))
    for name, keep in steps:
        before = len(left)
        left = [h for h in left if keep(h, req, settings)]
        results.append((name, before, len(left)))
    return left, results


def weigh_key(host: HostState, req: PlacementRequest) -> tuple[int, int, int, str]:
    """The sort key of a host that passed the filters (smallest first)."""
    if req.group_policy is GroupPolicy.SOFT_AFFINITY:
        group = -host.group_members
    elif req.group_policy is GroupPolicy.SOFT_ANTI_AFFINITY:
        group = host.group_members
    else:
        group = 0
    return (group, host.project_servers, -host.free_ram_mb, host.name)


def weigh_hosts(hosts: Sequence[HostState], req: PlacementRequest) -> list[HostState]:
    """The hosts, best first."""
    return sorted(hosts, key=lambda h: weigh_key(h, req))


def select_host(hosts: Sequence[HostState], req: PlacementRequest,
                settings: SchedulerSettings) -> HostState:
    """The best host for the request; NoFittingHost (a NoValidHost) if none passes."""
    passed, results = filter_hosts(hosts, req, settings)
    if not passed:
        raise NoFittingHost(results)
    return weigh_hosts(passed, req)[0]
