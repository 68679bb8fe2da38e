"""The controller's FleetApplier (issue 12) with in-memory fakes: heartbeats kept, events
applied in per-host seq order exactly once, a gap answered with a snapshot request, and a
server the agent deleted deleted here with its ports released."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from agent.model.domain import PowerState
from agent.model.fleet import EventMessage, EventVerdict, ServerSnapshot, SnapshotRequest
from agent.model.server import Fault
from agent.model.states import Status, TaskState, VmState
from tests.unit.core.fleet_world import ALICE, T0, beat, controller


def snapshot(**kw: Any) -> ServerSnapshot:
    fields: dict[str, Any] = {"vm_state": VmState.ACTIVE, "task_state": None,
                              "power_state": PowerState.RUNNING, "progress": 100,
                              "launched_at": T0, "updated_at": T0}
    fields.update(kw)
    return ServerSnapshot(**fields)


def event(server_id: uuid.UUID, seq: int, host: str = "hv1",
          server: ServerSnapshot | None = None) -> EventMessage:
    snap = server or snapshot()
    status = Status.DELETED if snap.deleted_at else Status.ACTIVE
    return EventMessage(host=host, seq=seq, server_id=server_id, status=status,
                        power_state=snap.power_state, at=T0, server=snap)


async def placed(c, host: str = "hv1"):
    """A server placed on `host`, whose agent fetched (so holds) its create."""
    await c.heartbeat(host)
    server = await c.create()
    await c.fetch_tickets(host)
    return server


async def test_a_heartbeat_makes_and_refreshes_the_host():
    c = controller()
    await c.applier(beat("hv1"))
    c.clock.tick(10)
    await c.applier(beat("hv1", running_servers=3))
    host = c.store.get_host("hv1")
    assert host.heartbeat.running_servers == 3 and host.heartbeat_at == T0 + timedelta(seconds=10)


async def test_the_next_event_copies_the_agents_fields_onto_the_controllers_server():
    c = controller()
    server = await placed(c)
    assert await c.applier.apply_event(event(server.id, 1)) is EventVerdict.APPLY
    got = c.store.get_server(server.id)
    assert (got.status, got.power_state, got.progress, got.launched_at) == (
        Status.ACTIVE, PowerState.RUNNING, 100, T0)
    assert (got.name, got.host, got.project_id) == (server.name, "hv1", server.project_id)
    assert c.store.get_host("hv1").last_event_seq == 1
    assert c.bus.snapshots == []


async def test_a_duplicate_event_changes_nothing():
    c = controller()
    server = await placed(c)
    await c.applier(event(server.id, 1))
    await c.applier(event(server.id, 2, server=snapshot(vm_state=VmState.STOPPED,
                                                          power_state=PowerState.SHUTDOWN)))
    before = c.store.revision()
    old = event(server.id, 1)  # a redelivery of the first: ACTIVE again
    assert await c.applier.apply_event(old) is EventVerdict.DUPLICATE
    assert c.store.revision() == before
    assert c.store.get_server(server.id).status is Status.SHUTOFF


async def test_a_gap_asks_the_host_for_a_snapshot_and_applies_the_event():
    c = controller()
    server = await placed(c)
    await c.applier(event(server.id, 1))
    fault = Fault(code=500, message="boom", created=T0)
    assert await c.applier.apply_event(event(server.id, 5, server=snapshot(
        vm_state=VmState.ERROR, fault=fault))) is EventVerdict.GAP
    assert c.bus.snapshots == [SnapshotRequest(host="hv1", after_seq=1)]
    got = c.store.get_server(server.id)
    assert got.status is Status.ERROR and got.fault == fault
    assert c.store.get_host("hv1").last_event_seq == 5
    await c.applier(event(server.id, 6))
    assert len(c.bus.snapshots) == 1  # in order again


async def test_the_first_event_of_a_host_with_a_history_is_a_gap():
    c = controller()
    server = await placed(c)
    await c.applier(event(server.id, 40))
    assert c.bus.snapshots == [SnapshotRequest(host="hv1", after_seq=0)]


async def test_a_failed_snapshot_request_commits_nothing_so_the_redelivery_asks_again():
    c = controller()
    server = await placed(c)

    async def broken(request):
        raise ConnectionError("broker gone")

    c.bus.request_snapshot = broken
    with pytest.raises(ConnectionError):  # the handler fails: the message comes again
        await c.applier(event(server.id, 3))
    assert c.store.get_host("hv1").last_event_seq == 0
    assert c.store.get_server(server.id).status is Status.BUILD


async def test_an_event_for_another_hosts_server_moves_only_that_hosts_seq():
    c = controller()
    server = await placed(c, "hv1")
    await c.applier(event(server.id, 1, host="hv2"))
    assert c.store.get_server(server.id).status is Status.BUILD
    assert c.store.get_host("hv2").last_event_seq == 1


async def test_a_server_the_agent_deleted_is_deleted_here_with_its_ports_released():
    c = controller()
    server = await placed(c)
    [port] = c.store.list_ports(device_id=str(server.id))
    await c.applier(event(server.id, 1))
    await c.applier(event(server.id, 2, server=snapshot(
        vm_state=VmState.DELETED, task_state=None, power_state=PowerState.NOSTATE,
        deleted_at=T0 + timedelta(minutes=1))))
    got = c.store.get_server(server.id)
    assert got.status is Status.DELETED and got.deleted_at == T0 + timedelta(minutes=1)
    assert c.store.get_port(port.id) is None  # the address is free for the next server


async def test_a_task_state_from_the_agent_is_copied_too():
    c = controller()
    server = await placed(c)
    await c.applier(event(server.id, 1, server=snapshot(task_state=TaskState.REBOOTING)))
    assert c.store.get_server(server.id).status is Status.REBOOT



async def test_an_event_older_than_the_hosts_copy_of_a_job_keeps_the_controllers_status():
    """A delete asked, its ticket not yet fetched: an event the agent sent before it got
    the job (ACTIVE, powered off meanwhile) must not undo "being deleted"."""
    c = controller()
    server = await placed(c)
    await c.applier(event(server.id, 1))
    await c.service.delete(ALICE, server.id)
    await c.dispatcher.dispatch_pending()
    await c.applier(event(server.id, 2, server=snapshot(power_state=PowerState.SHUTDOWN)))
    got = c.store.get_server(server.id)
    assert got.task_state is TaskState.DELETING and got.power_state is PowerState.SHUTDOWN
    await c.fetch_tickets("hv1")  # the agent holds the delete now: its events are current
    await c.applier(event(server.id, 3, server=snapshot(task_state=TaskState.DELETING)))
    await c.applier(event(server.id, 4, server=snapshot(
        vm_state=VmState.DELETED, power_state=PowerState.NOSTATE, deleted_at=T0)))
    assert c.store.get_server(server.id).status is Status.DELETED


async def test_a_deleted_snapshot_applies_even_while_a_job_is_on_its_way():
    c = controller()
    server = await placed(c)
    await c.applier(event(server.id, 1))
    await c.service.delete(ALICE, server.id)  # queued here, not yet out
    await c.applier(event(server.id, 2, server=snapshot(
        vm_state=VmState.DELETED, power_state=PowerState.NOSTATE, deleted_at=T0)))
    assert c.store.get_server(server.id).status is Status.DELETED
