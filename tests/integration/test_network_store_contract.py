"""The Store's port methods, proven against SqliteStore and MemoryStore alike: an address
and a MAC are allocated once (the UNIQUE constraints decide, also between threads), a
server's ports commit with it or not at all, release deletes ours and detaches the user's."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.sqlite_store import SqliteStore
from agent.errors import IpAddressInUse, MacAddressInUse, PortInUse, PortNotFound, StoreError
from agent.model.network import Port, PortStatus
from agent.protocols import NewServer, Store
from tests.integration.test_store_contract import make_job, make_server
from tests.unit.fakes.store import MemoryStore

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
NET = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER_NET = uuid.UUID("22222222-2222-4222-8222-222222222222")


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Any = SqliteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def make_port(n: int, **kw: Any) -> Port:
    fields: dict[str, Any] = {"id": uuid.uuid4(), "network_id": NET, "project_id": "p1",
                              "mac": f"fa:16:3e:00:00:{n:02x}", "ip": f"10.213.0.{n}",
                              "created_at": T0 + timedelta(seconds=n)}
    fields.update(kw)
    return Port(**fields)


async def test_a_port_round_trips_every_field(store: Store):
    port = make_port(5, name="nic ✓", device_id="srv", device_owner="compute:nova", device_index=3,
                     status=PortStatus.ACTIVE, created_by_agent=True,
                     created_at=T0.astimezone(timezone(timedelta(hours=2))))
    await store.add_port(port)
    got = store.get_port(port.id)
    assert got == port and got.created_at.utcoffset() == timedelta(0)
    assert store.get_port(uuid.uuid4()) is None


async def test_an_address_is_allocated_once_per_network_and_a_mac_once(store: Store):
    await store.add_port(make_port(5))
    with pytest.raises(IpAddressInUse, match=r"10\.213\.0\.5"):
        await store.add_port(make_port(6, ip="10.213.0.5"))
    with pytest.raises(MacAddressInUse):
        await store.add_port(make_port(5, ip="10.213.0.9"))
    await store.add_port(make_port(7, ip="10.213.0.5", network_id=OTHER_NET))  # another network
    with pytest.raises(StoreError):
        await store.add_port(store.list_ports()[0].model_copy(update={"mac": "fa:16:3e:01:01:01",
                                                                 "ip": IPv4Address("10.213.0.77")}))
    assert len(store.list_ports()) == 2


async def test_concurrent_allocations_of_one_address_give_it_to_exactly_one(store: Store):
    results: list[str] = []
    barrier = threading.Barrier(8)

    async def grab(i: int) -> None:
        barrier.wait()
        try:
            await store.add_port(make_port(10 + i, ip="10.213.0.200"))
            results.append("won")
        except IpAddressInUse:
            results.append("in use")

    threads = [threading.Thread(target=asyncio.run, args=(grab(i),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["in use"] * 7 + ["won"]


async def test_ports_are_listed_by_filter_in_nic_order(store: Store):
    a = make_port(1, device_id="s1", device_index=1)
    b = make_port(2, device_id="s1", device_index=0, network_id=OTHER_NET)
    c = make_port(3, project_id="p2")
    for p in (a, b, c):
        await store.add_port(p)
    assert [p.id for p in store.list_ports(device_id="s1")] == [b.id, a.id]
    assert [p.id for p in store.list_ports(network_id=NET)] == [c.id, a.id]
    assert [p.id for p in store.list_ports(project_id="p2")] == [c.id]
    assert store.list_ports(device_id="s1", project_id="p2") == []


async def test_a_server_commits_with_its_new_and_bound_ports_or_not_at_all(store: Store):
    free = make_port(1)
    await store.add_port(free)
    server = make_server()
    new = make_port(2, device_id=str(server.id), device_index=0, created_by_agent=True)
    bind = free.model_copy(update={"device_id": str(server.id), "device_owner": "compute:nova",
                                   "device_index": 1})
    await store.create_server(server, make_job(server.id), [new, bind])
    assert store.list_ports(device_id=str(server.id)) == [new, bind]

    second = make_server()
    clash = make_port(3, ip="10.213.0.2", device_id=str(second.id), created_by_agent=True)
    with pytest.raises(IpAddressInUse):
        await store.create_server(second, make_job(second.id), [make_port(4, created_by_agent=True,
                                                                    device_id=str(second.id)), clash])
    assert store.get_server(second.id) is None and store.get_port(clash.id) is None
    assert len(store.list_ports()) == 2
    third = make_server()
    with pytest.raises(PortInUse):
        await store.create_server(third, make_job(third.id),
                                  [bind.model_copy(update={"device_id": str(third.id)})])
    with pytest.raises(PortNotFound):
        await store.create_server(third, make_job(third.id), [make_port(9, device_id=str(third.id))])
    assert store.get_server(third.id) is None


async def test_a_batch_of_servers_commits_whole_or_not_at_all(store: Store):
    """create_servers (a multi-create): when the last server's port clashes, neither the
    servers before it, nor their jobs, ports or events are written."""
    servers = [make_server(name=f"web-{i}", reservation_id="r-batch001") for i in (1, 2, 3)]
    ports = [make_port(i, device_id=str(s.id), created_by_agent=True)
             for i, s in enumerate(servers, start=1)]
    ports[2] = ports[2].model_copy(update={"ip": ports[0].ip})
    before = store.events_since(0)
    with pytest.raises(IpAddressInUse):
        await store.create_servers([NewServer(s, make_job(s.id), [p])
                                    for s, p in zip(servers, ports, strict=True)])
    assert store.list_servers() == [] and store.list_ports() == []
    assert store.unfinished_jobs() == [] and store.events_since(0) == before

    ports[2] = make_port(3, device_id=str(servers[2].id), created_by_agent=True)
    await store.create_servers([NewServer(s, make_job(s.id), [p])
                                    for s, p in zip(servers, ports, strict=True)])
    assert {s.name for s in store.list_servers()} == {"web-1", "web-2", "web-3"}
    assert {s.reservation_id for s in store.list_servers()} == {"r-batch001"}
    assert len(store.unfinished_jobs()) == 3 and len(store.list_ports()) == 3
    assert [e.new_status for e in store.events_since(0)] == ["BUILD"] * 3


async def test_release_deletes_the_agents_ports_and_detaches_the_users(store: Store):
    ours = make_port(1, device_id="s1", device_index=0, created_by_agent=True, status=PortStatus.ACTIVE)
    users = make_port(2, device_id="s1", device_index=1, device_owner="compute:nova",
                      status=PortStatus.ACTIVE)
    other = make_port(3, device_id="s2", created_by_agent=True)
    for p in (ours, users, other):
        await store.add_port(p)
    assert await store.release_ports("s1") == [ours, users]
    assert store.get_port(ours.id) is None
    kept = store.get_port(users.id)
    assert (kept.device_id, kept.device_owner, kept.device_index, kept.status) == ("", "", 0, PortStatus.DOWN)
    assert await store.release_ports("s1") == [] and await store.release_ports("") == []
    assert store.get_port(other.id) == other


async def test_status_is_set_and_only_free_ports_are_deleted(store: Store):
    bound = make_port(1, device_id="s1")
    free = make_port(2)
    await store.add_port(bound)
    await store.add_port(free)
    await store.set_port_status([bound.id, uuid.uuid4()], "ACTIVE")
    assert store.get_port(bound.id).status is PortStatus.ACTIVE
    with pytest.raises(PortInUse):
        await store.delete_port(bound.id)
    assert await store.delete_port(free.id) == free
    with pytest.raises(PortNotFound):
        await store.delete_port(free.id)
