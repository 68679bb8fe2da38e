"""The Placer over the controller's store and host registry: a burst of creates spreads
2/2/2 before any heartbeat reports one of them, group policies hold across the burst, a
disabled, down or imageless host gets nothing, deleted servers free their host's room."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.core.flavors import FlavorCatalog
from agent.core.placement import Placer, usage_by_host
from agent.errors import NoValidHost
from agent.model.fleet import Heartbeat
from agent.model.host import VirtType
from agent.model.job import Job, JobKind
from agent.model.scheduling import GroupPolicy, SchedulerSettings, ServerGroup
from agent.model.server import Server
from agent.model.states import VmState
from agent.protocols import Store
from tests.unit.fakes.hosts import MemoryHostRegistry
from tests.unit.fakes.images import FakeImageCatalog, make_image
from tests.unit.fakes.store import MemoryStore

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
IMAGE = make_image("cirros")
FLAVORS = FlavorCatalog()
TINY = FLAVORS.get("1")  # 1 vCPU, 256 MiB, 1 GiB


def beat(name: str, *, images: tuple[str, ...] = (str(IMAGE.uuid),), **kw: Any) -> Heartbeat:
    fields: dict[str, Any] = {"host": name, "vcpus": 4, "ram_mb": 8192, "disk_total_gb": 100,
                              "disk_used_gb": 0, "running_servers": 0, "virt_type": VirtType.QEMU,
                              "images": list(images), "sent_at": NOW, "interval_s": 10.0}
    fields.update(kw)
    return Heartbeat(**fields)


class Fleet:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.hosts = MemoryHostRegistry()
        self.placer = Placer(self.hosts, self.store, FLAVORS, SchedulerSettings(),
                             images=FakeImageCatalog([IMAGE]), now=lambda: NOW)

    async def add_hosts(self, *names: str, **kw: Any) -> None:
        for name in names:
            await self.hosts.record_heartbeat(beat(name, **kw), NOW)

    async def create(self, project: str = "p1", group: ServerGroup | None = None,
                     flavor_id: str = "1") -> Server:
        """A server as the controller's API commits it (no host yet), then placed and its
        host recorded, as the dispatcher does before it places the next one."""
        hints = {"group": str(group.id)} if group else {}
        server = Server(id=uuid.uuid4(), project_id=project, user_id="u", name="vm",
                        image_id=IMAGE.uuid, flavor_id=flavor_id, scheduler_hints=hints,
                        created_at=NOW, updated_at=NOW)
        await self.store.create_server(server, Job(id=uuid.uuid4(), server_id=server.id,
                                                   kind=JobKind.CREATE, created_at=NOW,
                                                   updated_at=NOW))
        host = self.placer.place(server, FLAVORS.get(flavor_id))
        return await self.store.update_server(server.id, {"host": host}, cause="placed")

    async def group(self, policy: GroupPolicy, project: str = "p1") -> ServerGroup:
        return await self.store.add_server_group(ServerGroup(
            id=uuid.uuid4(), project_id=project, user_id="u", name="g", policy=policy,
            created_at=NOW))


@pytest.fixture
async def fleet() -> Fleet:
    f = Fleet()
    await f.add_hosts("hv1", "hv2", "hv3")
    return f


def hosts_of(servers: list[Server]) -> list[str]:
    return sorted(s.host for s in servers)


async def test_a_burst_of_six_creates_of_one_project_lands_two_two_two(fleet: Fleet):
    made = [await fleet.create() for _ in range(6)]
    assert hosts_of(made) == ["hv1", "hv1", "hv2", "hv2", "hv3", "hv3"]
    # the heartbeats never changed: the spread comes from the controller's own servers


async def test_another_project_spreads_on_its_own_and_prefers_free_ram(fleet: Fleet):
    await fleet.create("p1", flavor_id="3")  # 1024 MiB on hv1
    await fleet.create("p1")  # 256 MiB on hv2
    other = [await fleet.create("p2") for _ in range(3)]
    assert [s.host for s in other] == ["hv3", "hv2", "hv1"]  # most free RAM first, each once


async def test_an_anti_affinity_group_of_four_on_three_hosts_fails_the_fourth(fleet: Fleet):
    group = await fleet.group(GroupPolicy.ANTI_AFFINITY)
    made = [await fleet.create(group=group) for _ in range(3)]
    assert hosts_of(made) == ["hv1", "hv2", "hv3"]
    with pytest.raises(NoValidHost, match=r"^No valid host was found\. There are not enough "
                                          r"hosts available\.$"):
        await fleet.create(group=group)


async def test_an_affinity_group_stays_on_its_first_host_and_soft_anti_affinity_spreads(fleet: Fleet):
    await fleet.create()  # the project already has a server on hv1
    group = await fleet.group(GroupPolicy.AFFINITY)
    made = [await fleet.create(group=group) for _ in range(3)]
    assert [s.host for s in made] == ["hv2"] * 3
    soft = await fleet.group(GroupPolicy.SOFT_ANTI_AFFINITY)
    spread = [await fleet.create(group=soft) for _ in range(4)]
    assert hosts_of(spread[:3]) == ["hv1", "hv2", "hv3"]


async def test_a_disabled_or_down_host_gets_no_server(fleet: Fleet):
    await fleet.hosts.set_host_enabled("hv1", False, "maintenance")
    await fleet.hosts.record_heartbeat(beat("hv2"), NOW - timedelta(seconds=31))  # 3 missed
    made = [await fleet.create() for _ in range(3)]
    assert [s.host for s in made] == ["hv3"] * 3
    await fleet.hosts.set_host_enabled("hv1", True)
    assert (await fleet.create()).host == "hv1"


async def test_a_host_without_the_image_gets_no_server_and_names_count_too(fleet: Fleet):
    await fleet.hosts.record_heartbeat(beat("hv1", images=("other",)), NOW)
    await fleet.hosts.record_heartbeat(beat("hv2", images=("cirros",)), NOW)  # by name
    await fleet.hosts.record_heartbeat(beat("hv3", images=()), NOW)
    made = [await fleet.create() for _ in range(2)]
    assert [s.host for s in made] == ["hv2", "hv2"]


async def test_no_host_at_all_or_none_with_room_is_no_valid_host():
    empty = Fleet()
    with pytest.raises(NoValidHost):
        await empty.create()
    await empty.add_hosts("hv1", ram_mb=1024)  # 1024 MiB * 1.5 = 1536 MiB to place
    await empty.create(flavor_id="3")  # 1024
    assert (await empty.create(flavor_id="2")).host == "hv1"  # 1024 + 512 = 1536: fits
    with pytest.raises(NoValidHost):
        await empty.create(flavor_id="1")  # 256 more does not


async def test_deleted_servers_free_their_room_and_leave_their_group(fleet: Fleet):
    group = await fleet.group(GroupPolicy.ANTI_AFFINITY)
    made = [await fleet.create(group=group) for _ in range(3)]
    await fleet.store.update_server(made[1].id, {"vm_state": VmState.DELETED, "task_state": None},
                                    cause="deleted")
    assert (await fleet.create(group=group)).host == made[1].host
    usage = usage_by_host(fleet.store.list_servers(), FLAVORS)
    assert {h: (u.servers, u.ram_mb) for h, u in usage.items()} == {
        "hv1": (1, 256), "hv2": (1, 256), "hv3": (1, 256)}
