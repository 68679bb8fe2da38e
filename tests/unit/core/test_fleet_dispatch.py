"""The controller's FleetDispatcher (issue 12) with in-memory fakes: placement, the job
published only by id, NoValidHost as Nova shows it, deletes of servers never placed, and
a restart that re-dispatches what was not confirmed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from agent.core.flavors import FlavorCatalog
from agent.core.fleet_dispatch import DISPATCHED_STEP, FETCHED_STEP, FleetDispatcher, ticket_path
from agent.core.placement import Placer
from agent.errors import NoValidHost
from agent.model.job import JobKind, JobStatus
from agent.model.requests import CreateServer
from agent.model.server import Server
from agent.model.states import Status, TaskState
from tests.unit.core.fleet_world import ALICE, IMAGE, controller
from tests.unit.fakes.bus import RecordingBus
from tests.unit.fakes.images import FakeImageCatalog
from tests.unit.fakes.store import MemoryStore


def jobs_of(c, server_id):
    return [j for j in c.store._jobs.values() if j.server_id == server_id]


async def test_a_create_is_placed_recorded_on_the_server_then_published_by_id_only():
    c = controller()
    await c.heartbeat("hv2")
    await c.heartbeat("hv1")
    server = await c.create()
    assert server.host == "hv1"  # first by name
    assert server.status is Status.BUILD  # the agent's events move it on
    [(host, message)] = c.bus.jobs
    [job] = jobs_of(c, server.id)
    assert host == "hv1"
    assert (message.job_id, message.server_id, message.kind) == (job.id, server.id, JobKind.CREATE)
    assert message.payload_ref == ticket_path(job.id) == f"/fleet/v1/jobs/{job.id}"
    assert "admin_pass_hash" not in message.model_dump_json()
    # Ended once confirmed; the payload kept for the agent's ticket fetch.
    assert (job.status, job.step) == (JobStatus.SUCCEEDED, DISPATCHED_STEP)
    assert "admin_pass_hash" in job.payload
    assert c.store.unfinished_jobs() == []


async def test_no_host_up_enabled_with_the_image_is_no_valid_host_error_and_ports_released():
    c = controller()
    await c.heartbeat("hv-noimage", images=("other",))
    await c.heartbeat("hv-disabled")
    await c.store.set_host_enabled("hv-disabled", False, "maintenance")
    await c.heartbeat("hv-down")
    c.clock.tick(31)  # three intervals of 10 s without a heartbeat: down
    server = await c.create()
    assert server.status is Status.ERROR and server.host == ""
    assert server.fault.code == 500
    assert server.fault.message == "No valid host was found. There are not enough hosts available."
    assert c.store.list_ports(device_id=str(server.id)) == []  # its address is free again
    [job] = jobs_of(c, server.id)
    assert job.status is JobStatus.FAILED and job.error == server.fault.message
    assert c.bus.jobs == []


async def test_the_placer_sees_the_image_by_id_as_well_as_by_name():
    c = controller()
    await c.heartbeat("hv1", images=(str(IMAGE.uuid),))
    assert (await c.create()).host == "hv1"


async def test_a_delete_of_a_server_never_placed_is_done_by_the_controller():
    c = controller()
    server = await c.create()  # no host at all: ERROR
    await c.service.delete(ALICE, server.id)
    await c.dispatcher.dispatch_pending()
    gone = c.store.get_server(server.id)
    assert gone.status is Status.DELETED and gone.deleted_at is not None
    assert c.bus.jobs == [] and c.store.unfinished_jobs() == []


async def test_a_create_taken_over_by_a_delete_before_placement_is_cancelled_unplaced():
    c = controller()
    await c.heartbeat("hv1")
    req_server = await _committed_not_dispatched(c)
    assert c.store.list_ports(device_id=str(req_server.id))  # its address, allocated
    await c.service.delete(ALICE, req_server.id)
    await c.dispatcher.dispatch_pending()
    gone = c.store.get_server(req_server.id)
    assert gone.status is Status.DELETED and gone.host == ""
    assert c.store.list_ports(device_id=str(req_server.id)) == []
    assert c.bus.jobs == []
    create = next(j for j in jobs_of(c, req_server.id) if j.kind is JobKind.CREATE)
    assert create.status is JobStatus.CANCELLED


async def _committed_not_dispatched(c):
    server, _ = await c.service.create(ALICE, _req())
    return server


async def test_a_placed_servers_delete_goes_to_its_host_after_its_create():
    c = controller()
    await c.heartbeat("hv1")
    server = await _committed_not_dispatched(c)
    await c.dispatcher.dispatch_pending()
    await c.heartbeat("hv0")  # a new first host changes nothing for a placed server
    await c.service.delete(ALICE, server.id)
    await c.dispatcher.dispatch_pending()
    assert c.published() == [("hv1", "create", server.id), ("hv1", "delete", server.id)]
    # Deleted once the agent says so (its events): until then, being deleted.
    assert c.store.get_server(server.id).task_state is TaskState.DELETING


async def test_a_job_for_a_host_without_a_queue_waits_and_goes_out_once_it_has_one():
    c = controller(bus=RecordingBus(hosts=set()))
    await c.heartbeat("hv1")
    server = await c.create()
    assert server.host == "hv1" and c.bus.jobs == []
    assert [j.status for j in jobs_of(c, server.id)] == [JobStatus.QUEUED]
    c.bus.hosts = {"hv1"}
    assert await c.dispatcher.dispatch_pending() is False
    assert c.published() == [("hv1", "create", server.id)]


async def test_a_controller_killed_before_the_confirm_publishes_again_after_its_restart():
    """Nothing lost: the job stays unfinished until confirmed; the duplicate on the wire
    carries the same job id (the agent's idempotency key)."""
    c = controller()
    await c.heartbeat("hv1")
    server = await _committed_not_dispatched(c)
    c.bus.hold = asyncio.Event()  # the broker never confirms ...
    first = asyncio.create_task(c.dispatcher.dispatch_pending())
    await asyncio.sleep(0.01)
    first.cancel()  # ... and the controller dies
    with pytest.raises(asyncio.CancelledError):
        await first
    assert c.store.get_server(server.id).host == "hv1"  # placed before the publish
    c.bus.hold = None
    restarted = controller(store=c.store, bus=c.bus, clock=c.clock)
    run = asyncio.create_task(restarted.dispatcher.run())
    try:
        async with asyncio.timeout(5):
            while not c.bus.jobs:
                await asyncio.sleep(0.005)
    finally:
        run.cancel()
    [job] = jobs_of(c, server.id)
    assert [(h, m.job_id) for h, m in c.bus.jobs] == [("hv1", job.id)]
    assert job.status is JobStatus.SUCCEEDED


async def test_a_kick_wakes_the_running_dispatcher():
    c = controller()
    await c.heartbeat("hv1")
    run = asyncio.create_task(c.dispatcher.run())
    try:
        await asyncio.sleep(0.01)
        server, _ = await c.service.create(ALICE, _req())
        async with asyncio.timeout(5):
            while not c.bus.jobs:
                await asyncio.sleep(0.005)
    finally:
        run.cancel()
    assert c.published() == [("hv1", "create", server.id)]


def _req():
    return CreateServer(name="web", image_ref=str(IMAGE.uuid), flavor_ref="1")


async def test_a_burst_of_creates_is_placed_one_after_another_each_seeing_the_last():
    """Placement and the host's commit are one step: a placer counting the controller's
    servers per host sees every earlier placement of the burst."""
    c = controller()
    for h in ("hv1", "hv2", "hv3"):
        await c.heartbeat(h)

    class Spread:
        """Fewest servers first, counted from the controller's store alone."""

        hosts = c.store

        def place(self, server, flavor):
            counts = {h.name: 0 for h in self.hosts.list_hosts()}
            for s in c.store.list_servers():
                if s.host:
                    counts[s.host] += 1
            return min(sorted(counts), key=counts.__getitem__)

    c.dispatcher = FleetDispatcher(c.store, c.bus, Spread(), FlavorCatalog())
    for _ in range(6):
        await c.service.create(ALICE, _req())
    await c.dispatcher.dispatch_pending()
    hosts = sorted(h for h, _, _ in c.published())
    assert hosts == ["hv1", "hv1", "hv2", "hv2", "hv3", "hv3"]


def test_the_scheduler_raises_novas_no_valid_host_without_hosts():
    now = datetime.now(UTC)
    server = Server(id=uuid4(), project_id="p", user_id="u", name="x", image_id=IMAGE.uuid,
                    flavor_id="1", created_at=now, updated_at=now)
    with pytest.raises(NoValidHost, match=r"^No valid host was found\. "):
        store = MemoryStore()
        Placer(store, store, FlavorCatalog(), images=FakeImageCatalog([IMAGE])).place(
            server, FlavorCatalog().get("1"))


async def test_a_ticket_fetched_before_the_dispatchers_record_stays_fetched():
    """The agent may fetch as soon as the broker delivers, before the confirm's record."""
    c = controller()
    await c.heartbeat("hv1")

    class FetchingBus(RecordingBus):
        async def publish_job(self, host, job):
            await super().publish_job(host, job)
            await c.tickets.fetch(job.job_id, host)  # delivered and fetched at once

    c.bus = FetchingBus()
    c.dispatcher.bus = c.bus
    server = await c.create()
    [job] = jobs_of(c, server.id)
    assert (job.status, job.step) == (JobStatus.SUCCEEDED, FETCHED_STEP)


async def test_a_ticket_fetch_whose_write_is_still_on_its_way_stays_fetched():
    """Found by the three-host e2e test: the agent fetched while the broker's confirm was on
    its way, its "fetched" write not yet committed (SQLite writes go through one writer),
    and the confirm's record read the old step and wrote "dispatched" after it: the
    controller then kept BUILD against every later event of that server."""

    class QueuedWrites(MemoryStore):
        async def update_job(self, job_id, changes):
            await asyncio.sleep(0)  # submitted; committed when the writer gets to it
            return await super().update_job(job_id, changes)

    c = controller(store=QueuedWrites())
    await c.heartbeat("hv1")
    fetches = []

    class FetchingBus(RecordingBus):
        async def publish_job(self, host, job):
            await super().publish_job(host, job)
            fetches.append(asyncio.create_task(c.tickets.fetch(job.job_id, host)))
            await asyncio.sleep(0)  # the fetch runs until its write is submitted

    c.bus = FetchingBus()
    c.dispatcher.bus = c.bus
    server = await c.create()
    await asyncio.gather(*fetches)
    [job] = jobs_of(c, server.id)
    assert (job.status, job.step) == (JobStatus.SUCCEEDED, FETCHED_STEP)
