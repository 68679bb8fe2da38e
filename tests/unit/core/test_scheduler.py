"""The scheduler's filters and weighers (pure): the project's servers spread over hosts,
hard group policies filter, soft ones weigh, a host down, disabled, without the image or
too full gets nothing, and no host at all is Nova's NoValidHost."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.core.scheduler import (
    HostState,
    NoFittingHost,
    PlacementRequest,
    select_host,
    weigh_hosts,
)
from agent.errors import NoValidHost
from agent.model.scheduling import GroupPolicy, SchedulerSettings

NOVA = SchedulerSettings()
TINY = PlacementRequest(vcpus=1, ram_mb=512, disk_gb=1, image_keys=frozenset({"img"}))


def host(name: str, **kw) -> HostState:
    fields = {"up": True, "enabled": True, "images": frozenset({"img"}), "vcpus": 4,
              "ram_mb": 8192, "disk_gb": 100}
    fields.update(kw)
    return HostState(name=name, **fields)


def place_many(hosts: list[HostState], req: PlacementRequest, count: int,
               settings: SchedulerSettings = NOVA, *, in_group: bool = False) -> list[str]:
    """Place `count` servers one after the other, each counted on its host before the next
    (as the controller's store counts them), like a burst of creates of one project."""
    chosen = []
    by_name = {h.name: h for h in hosts}
    for _ in range(count):
        picked = select_host(list(by_name.values()), req, settings)
        chosen.append(picked.name)
        by_name[picked.name] = replace(
            picked, vcpus_used=picked.vcpus_used + req.vcpus,
            ram_mb_used=picked.ram_mb_used + req.ram_mb, disk_gb_used=picked.disk_gb_used + req.disk_gb,
            project_servers=picked.project_servers + 1,
            group_members=picked.group_members + (1 if in_group else 0))
    return chosen


def test_six_servers_of_one_project_spread_two_two_two_over_three_hosts():
    chosen = place_many([host("hv1"), host("hv2"), host("hv3")], TINY, 6)
    assert sorted(chosen) == ["hv1", "hv1", "hv2", "hv2", "hv3", "hv3"]
    assert chosen[:3] == ["hv1", "hv2", "hv3"]  # each host once before any host twice


def test_the_project_spread_comes_before_free_ram():
    # hv1 has far more free RAM but already one of the project's servers.
    hosts = [host("hv1", ram_mb=65536, project_servers=1), host("hv2")]
    assert select_host(hosts, TINY, NOVA).name == "hv2"


def test_another_project_goes_to_the_host_with_most_free_ram_then_by_name():
    hosts = [host("hv1", ram_mb_used=2048), host("hv2", ram_mb_used=1024), host("hv3", ram_mb_used=1024)]
    assert [h.name for h in weigh_hosts(hosts, TINY)] == ["hv2", "hv3", "hv1"]


def test_an_anti_affinity_group_of_four_on_three_hosts_has_no_host_for_the_fourth():
    req = replace(TINY, group_policy=GroupPolicy.ANTI_AFFINITY)
    hosts = [host("hv1"), host("hv2"), host("hv3")]
    assert sorted(place_many(hosts, req, 3, in_group=True)) == ["hv1", "hv2", "hv3"]
    with pytest.raises(NoValidHost) as e:
        place_many(hosts, req, 4, in_group=True)
    assert str(e.value) == "No valid host was found. There are not enough hosts available."
    assert isinstance(e.value, NoFittingHost)
    assert e.value.describe().endswith("ServerGroupAntiAffinityFilter: (start: 3, end: 0)")


def test_anti_affinity_also_avoids_member_hosts_named_by_the_request():
    req = replace(TINY, group_policy=GroupPolicy.ANTI_AFFINITY, group_hosts=frozenset({"hv1"}))
    assert select_host([host("hv1"), host("hv2", project_servers=5)], req, NOVA).name == "hv2"


def test_affinity_puts_every_member_on_the_first_members_host():
    req = replace(TINY, group_policy=GroupPolicy.AFFINITY)
    assert place_many([host("hv1"), host("hv2"), host("hv3")], req, 4, in_group=True) == ["hv1"] * 4


def test_affinity_with_the_groups_host_full_has_no_host():
    req = replace(TINY, group_policy=GroupPolicy.AFFINITY)
    hosts = [host("hv1", group_members=1, ram_mb=512, ram_mb_used=512), host("hv2")]
    with pytest.raises(NoValidHost):
        select_host(hosts, req, SchedulerSettings(ram_allocation_ratio=1.0))


def test_soft_policies_weigh_members_before_the_project_spread():
    hosts = [host("hv1", group_members=2, project_servers=2), host("hv2", project_servers=1)]
    soft = replace(TINY, group_policy=GroupPolicy.SOFT_AFFINITY)
    assert select_host(hosts, soft, NOVA).name == "hv1"
    soft_anti = replace(TINY, group_policy=GroupPolicy.SOFT_ANTI_AFFINITY)
    both_have = [host("hv1", group_members=1), host("hv2", group_members=1)]
    assert [h.name for h in weigh_hosts(both_have, soft_anti)] == ["hv1", "hv2"]
    # soft-anti-affinity never refuses: every host has a member, one is still chosen
    assert select_host(both_have, soft_anti, NOVA).name == "hv1"


@pytest.mark.parametrize(("broken", "filter_name"), [
    ({"enabled": False}, "ComputeFilter"),
    ({"up": False}, "ComputeFilter"),
    ({"images": frozenset({"other"})}, "ImagePropertiesFilter"),
])
def test_a_disabled_down_or_imageless_host_gets_nothing(broken, filter_name):
    hosts = [host("hv1", **broken), host("hv2", project_servers=9, ram_mb_used=8000)]
    assert place_many(hosts, TINY, 3) == ["hv2"] * 3
    with pytest.raises(NoFittingHost) as e:
        select_host([host("hv1", **broken)], TINY, NOVA)
    assert (filter_name, 1, 0) in e.value.filter_results


def test_an_image_is_found_by_any_of_its_keys():
    req = replace(TINY, image_keys=frozenset({"uuid-1", "cirros"}))
    assert select_host([host("hv1", images=frozenset({"cirros"}))], req, NOVA).name == "hv1"


def test_allocation_ratios_decide_what_fits():
    full = host("hv1", vcpus=2, vcpus_used=32, ram_mb=1024, ram_mb_used=1024, disk_gb=10, disk_gb_used=9)
    # 2 cores * 16 = 32 vCPUs, all used: the CoreFilter refuses; with ratio 17 it fits.
    with pytest.raises(NoFittingHost) as e:
        select_host([full], TINY, NOVA)
    assert ("CoreFilter", 1, 0) in e.value.filter_results
    roomy_cpu = SchedulerSettings(cpu_allocation_ratio=17.0)
    # RAM: 1024 * 1.5 = 1536 >= 1024 + 512, fits; disk 10 * 1.0 >= 9 + 1 fits.
    assert select_host([full], TINY, roomy_cpu).name == "hv1"
    with pytest.raises(NoFittingHost) as e:
        select_host([full], TINY, roomy_cpu.model_copy(update={"ram_allocation_ratio": 1.0}))
    assert ("RamFilter", 1, 0) in e.value.filter_results
    with pytest.raises(NoFittingHost) as e:
        select_host([full], replace(TINY, disk_gb=2), roomy_cpu)
    assert ("DiskFilter", 1, 0) in e.value.filter_results


def test_no_host_at_all_is_no_valid_host():
    with pytest.raises(NoValidHost, match=r"^No valid host was found\. "):
        select_host([], TINY, NOVA)
