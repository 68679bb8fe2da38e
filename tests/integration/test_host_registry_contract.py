"""The HostRegistry contract (the controller's hosts, issue 12), proven against SqliteStore
and its in-memory twin alike: a host is made by its first heartbeat, enabled or disabled
with a reason, and a host's event is applied with its seq in one transaction."""

# ruff: noqa: F811 - `store` is the contract suite's fixture, taken as every test's argument
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agent.errors import HostNotFound
from agent.model.domain import PowerState
from agent.model.fleet import Heartbeat
from agent.model.network import Port, PortStatus
from agent.model.states import Status, TaskState, VmState
from tests.integration.test_store_contract import T0, make_job, make_server, store  # noqa: F401

NET = uuid.UUID("5a0e9f4e-8c1d-4b7a-9e3f-2d6c8b1a0f11")


def beat(host: str = "hv1", **kw: Any) -> Heartbeat:
    fields: dict[str, Any] = {
        "host": host, "vcpus": 8, "ram_mb": 16000, "disk_total_gb": 100, "disk_used_gb": 10,
        "running_servers": 2, "virt_type": "qemu", "images": ["busybox-test"], "sent_at": T0,
        "interval_s": 10}
    fields.update(kw)
    return Heartbeat(**fields)


def port(server_id: uuid.UUID, ip: str, *, mine: bool) -> Port:
    return Port(id=uuid.uuid4(), network_id=NET, project_id="p1", mac=f"fa:16:3e:00:00:{ip[-2:]}",
                ip=ip, device_id=str(server_id), device_owner="compute:nova",
                created_by_agent=mine, created_at=T0)


async def placed(store, host: str = "hv1", ports: tuple[Port, ...] = (), **kw: Any):
    server = make_server(host=host, **kw)
    await store.create_server(server, make_job(server.id), ports)
    return server


async def test_a_host_is_made_by_its_first_heartbeat_and_keeps_the_last(store) -> None:
    assert store.list_hosts() == [] and store.get_host("hv1") is None
    plus2 = timezone(timedelta(hours=2))
    first = await store.record_heartbeat(beat(), T0.astimezone(plus2))
    assert (first.name, first.enabled, first.last_event_seq) == ("hv1", True, 0)
    assert first.heartbeat == beat() and first.heartbeat_at == T0
    assert first.heartbeat_at.utcoffset() == timedelta(0)
    later = beat(running_servers=3, images=["a", "b"])
    await store.record_heartbeat(later, T0 + timedelta(seconds=10))
    await store.record_heartbeat(beat("hv0"), T0)
    got = store.get_host("hv1")
    assert got.heartbeat == later and got.heartbeat_at == T0 + timedelta(seconds=10)
    assert [h.name for h in store.list_hosts()] == ["hv0", "hv1"]
    assert got.is_down(T0 + timedelta(seconds=25)) is False
    assert got.is_down(T0 + timedelta(seconds=41)) is True


async def test_a_naive_receive_time_is_refused(store) -> None:
    with pytest.raises(ValueError):
        await store.record_heartbeat(beat(), datetime(2024, 1, 1))
    assert store.list_hosts() == []


async def test_a_host_is_disabled_with_a_reason_and_enabled_again_and_heartbeats_keep_it(store) -> None:
    await store.record_heartbeat(beat(), T0)
    off = await store.set_host_enabled("hv1", False, "maintenance")
    assert (off.enabled, off.disabled_reason) == (False, "maintenance")
    await store.record_heartbeat(beat(), T0 + timedelta(seconds=10))
    assert store.get_host("hv1").enabled is False  # a heartbeat does not enable it
    on = await store.set_host_enabled("hv1", True, "ignored")
    assert (on.enabled, on.disabled_reason) == (True, None)


async def test_enabling_an_unknown_host_is_host_not_found_and_makes_nothing(store) -> None:
    with pytest.raises(HostNotFound):
        await store.set_host_enabled("nohost", False, "x")
    assert store.list_hosts() == []


async def test_an_event_applies_the_servers_changes_and_the_seq_in_one_write(store) -> None:
    server = await placed(store)
    before = store.revision()
    got = await store.apply_host_event("hv1", 1, server.id, {
        "vm_state": VmState.ACTIVE, "task_state": None, "power_state": PowerState.RUNNING,
        "progress": 100, "launched_at": T0}, cause="hv1 event 1")
    assert store.revision() == before + 1
    assert got == store.get_server(server.id) and got.status is Status.ACTIVE
    assert store.get_host("hv1").last_event_seq == 1
    assert [(e.old_status, e.new_status, e.cause) for e in store.events_since(0)
            if e.server_id == server.id][-1] == ("BUILD", "ACTIVE", "hv1 event 1")


async def test_an_event_for_a_server_on_another_host_or_unknown_moves_only_the_seq(store) -> None:
    server = await placed(store, host="hv2")
    assert await store.apply_host_event("hv1", 4, server.id, {"progress": 50}, cause="x") is None
    assert await store.apply_host_event("hv1", 5, uuid.uuid4(), {"progress": 50}, cause="x") is None
    assert store.get_server(server.id).progress == 0
    assert store.get_host("hv1").last_event_seq == 5  # made by the event: no heartbeat yet
    assert store.get_host("hv1").heartbeat is None


async def test_a_bad_change_writes_nothing_not_even_the_seq(store) -> None:
    server = await placed(store)
    await store.record_heartbeat(beat(), T0)
    with pytest.raises(ValueError):
        await store.apply_host_event("hv1", 1, server.id, {"no_such_field": 1}, cause="x")
    with pytest.raises(ValueError):
        await store.apply_host_event("hv1", 1, server.id, {"id": uuid.uuid4()}, cause="x")
    assert store.get_host("hv1").last_event_seq == 0


async def test_a_deleted_servers_event_releases_its_ports_in_the_same_write(store) -> None:
    server = make_server(host="hv1", vm_state=VmState.ACTIVE, task_state=TaskState.DELETING)
    mine = port(server.id, "10.0.0.12", mine=True)
    await store.create_server(server, make_job(server.id), [mine])
    users = port(uuid.uuid4(), "10.0.0.13", mine=False).model_copy(update={"device_id": str(server.id)})
    await store.add_port(users)
    before = store.revision()
    got = await store.apply_host_event("hv1", 1, server.id, {
        "vm_state": VmState.DELETED, "task_state": None, "deleted_at": T0}, cause="deleted",
        release_ports=True)
    assert store.revision() == before + 1
    assert got.status is Status.DELETED
    assert store.get_port(mine.id) is None  # the controller made it for the server
    kept = store.get_port(users.id)  # the user's: detached, kept
    assert (kept.device_id, kept.status) == ("", PortStatus.DOWN)


async def test_hosts_come_back_after_a_reopen(tmp_path) -> None:
    from agent.adapters.sqlite_store import SqliteStore

    first = SqliteStore(tmp_path / "c.db")
    await first.record_heartbeat(beat(), datetime.now(UTC))
    await first.set_host_enabled("hv1", False, "r")
    first.close()
    again = SqliteStore(tmp_path / "c.db")
    try:
        got = again.get_host("hv1")
        assert (got.enabled, got.disabled_reason, got.heartbeat) == (False, "r", beat())
    finally:
        again.close()
