"""The Store's fleet mode (issue 12), proven against SqliteStore and MemoryStore alike:
a job the controller made is adopted once in one transaction, and a snapshot appends one
event per server the agent holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from ipaddress import IPv4Address

import pytest

from agent.errors import IpAddressInUse, ServerNotFound
from agent.model.fleet import JobTicket
from agent.model.job import JobKind
from agent.model.network import Port
from agent.model.states import TaskState, VmState
from tests.integration.test_store_contract import active, make_job, make_server, store  # noqa: F401

pytestmark = pytest.mark.integration

NET = uuid.UUID("6f1d0c36-3c43-4c39-9d5f-1a2b3c4d5e6f")


def port(server_id: uuid.UUID, ip: str = "10.0.0.5", mac: str = "fa:16:3e:00:00:05") -> Port:
    return Port(id=uuid.uuid4(), network_id=NET, project_id="p1", mac=mac, ip=IPv4Address(ip),
                device_id=str(server_id), device_owner="compute:nova", created_by_agent=True,
                created_at=datetime.now(UTC))


def create_ticket(**server_fields) -> JobTicket:  # type: ignore[no-untyped-def]
    server = make_server(host="hv1", **server_fields)
    return JobTicket(job=make_job(server.id, payload={"admin_pass": "s3cret"}), server=server,
                     ports=[port(server.id)])


async def test_a_create_ticket_inserts_server_job_ports_and_first_event_once(store):  # noqa: F811
    ticket = create_ticket()
    assert await store.adopt_job(ticket) is True
    assert await store.adopt_job(ticket) is False  # a redelivery: nothing more
    server = store.get_server(ticket.server.id)
    assert server is not None and server.host == "hv1" and server.vm_state is VmState.BUILDING
    assert store.get_job(ticket.job.id).payload == {"admin_pass": "s3cret"}
    assert [p.id for p in store.list_ports(device_id=str(server.id))] == [ticket.ports[0].id]
    assert [(e.server_id, e.new_status, e.cause) for e in store.events_since(0)] == [
        (server.id, "BUILD", "create")]
    assert [j.id for j in store.unfinished_jobs()] == [ticket.job.id]


async def test_a_create_whose_port_address_is_taken_adopts_nothing(store):  # noqa: F811
    first = create_ticket()
    await store.adopt_job(first)
    clash = create_ticket()
    clash = clash.model_copy(update={"ports": [port(clash.server.id, mac="fa:16:3e:00:00:99")]})
    with pytest.raises(IpAddressInUse):
        await store.adopt_job(clash)
    assert store.get_server(clash.server.id) is None and store.get_job(clash.job.id) is None


async def test_a_free_leftover_port_with_the_new_ports_id_or_address_gives_way(store):  # noqa: F811
    """A user's port detached here when its server was deleted stays in this store free;
    the controller may later give that port (or its address) to a server placed here."""
    first = create_ticket()
    await store.adopt_job(first)
    await store.release_ports(str(first.server.id))  # its port made by the agent: gone
    leftover = port(first.server.id, ip="10.0.0.7", mac="fa:16:3e:00:00:07").model_copy(
        update={"device_id": "", "device_owner": "", "created_by_agent": False})
    await store.add_port(leftover)  # a user's free port, as a detach leaves it
    second = create_ticket()
    reused = leftover.model_copy(update={"device_id": str(second.server.id),
                                         "device_owner": "compute:nova"})
    assert await store.adopt_job(second.model_copy(update={"ports": [reused]})) is True
    assert [(p.id, p.device_id) for p in store.list_ports(network_id=NET)] == [
        (leftover.id, str(second.server.id))]
    third = create_ticket()
    taken = port(third.server.id, ip="10.0.0.7", mac="fa:16:3e:00:00:08")  # a bound address
    with pytest.raises(IpAddressInUse):
        await store.adopt_job(third.model_copy(update={"ports": [taken]}))


async def test_another_kind_inserts_the_job_and_takes_the_controllers_fields_not_the_agents(
        store):  # noqa: F811
    here = await active(store, host="hv1")
    controller_view = here.model_copy(update={
        "task_state": TaskState.POWERING_OFF, "name": "renamed", "metadata": {"k": "v"},
        "vm_state": VmState.ERROR, "progress": 50})  # the agent's fields: not adopted
    job = make_job(here.id, kind=JobKind.STOP)
    assert await store.adopt_job(JobTicket(job=job, server=controller_view)) is True
    assert await store.adopt_job(JobTicket(job=job, server=controller_view)) is False
    now = store.get_server(here.id)
    assert (now.task_state, now.name, now.metadata) == (TaskState.POWERING_OFF, "renamed", {"k": "v"})
    assert (now.vm_state, now.progress) == (VmState.ACTIVE, here.progress)
    assert store.get_job(job.id).kind is JobKind.STOP


async def test_a_non_create_job_for_a_server_not_here_is_refused(store):  # noqa: F811
    server = make_server()
    with pytest.raises(ServerNotFound):
        await store.adopt_job(JobTicket(job=make_job(server.id, kind=JobKind.DELETE), server=server))
    assert store.unfinished_jobs() == []


async def test_a_ticket_whose_parts_do_not_belong_together_is_refused(store):  # noqa: F811
    ticket = create_ticket()
    with pytest.raises(ValueError, match="not bound"):
        await store.adopt_job(ticket.model_copy(update={"ports": [port(uuid.uuid4())]}))
    with pytest.raises(ValueError):
        await store.adopt_job(ticket.model_copy(update={"job": make_job(uuid.uuid4())}))
    assert store.get_server(ticket.server.id) is None


async def test_a_snapshot_appends_one_event_per_live_server_and_per_recent_delete(store):  # noqa: F811
    old_deleted = await active(store)
    await store.update_server(old_deleted.id, {"vm_state": VmState.DELETED, "task_state": None},
                              cause="t")
    a, b = await active(store), await active(store)
    after = store.events_since(0)[-1].seq
    await store.update_server(b.id, {"vm_state": VmState.DELETED, "task_state": None}, cause="t")
    before = store.events_since(0)[-1].seq
    assert await store.append_snapshot_events(after) == 2
    snap = store.events_since(before)
    assert {(e.server_id, e.old_status, e.new_status, e.cause) for e in snap} == {
        (a.id, "ACTIVE", "ACTIVE", "snapshot"), (b.id, "DELETED", "DELETED", "snapshot")}
