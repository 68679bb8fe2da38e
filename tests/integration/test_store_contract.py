"""The Store contract, proven against both SqliteStore (the real thing) and MemoryStore (the
fake the core's unit tests use): whatever passes here behaves the same in both."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.sqlite_store import SqliteStore
from agent.errors import InvalidInput, ServerNotFound, StaleServer, StoreError
from agent.model.domain import PowerState
from agent.model.job import Job, JobKind, JobStatus
from agent.model.server import Fault, Server
from agent.model.states import Status, TaskState, VmState
from agent.protocols import ServerExpectation, Store
from tests.unit.fakes.store import MemoryStore

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
ACTIVE = ServerExpectation(vm_state=VmState.ACTIVE, task_state=None)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Any = SqliteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def make_server(**kw: Any) -> Server:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(), "project_id": "p1", "user_id": "u1", "name": "vm",
        "image_id": uuid.uuid4(), "flavor_id": "m1.small", "created_at": T0, "updated_at": T0}
    fields.update(kw)
    return Server(**fields)


def make_job(server_id: uuid.UUID, **kw: Any) -> Job:
    fields: dict[str, Any] = {"id": uuid.uuid4(), "server_id": server_id, "kind": JobKind.CREATE,
                              "created_at": T0, "updated_at": T0}
    fields.update(kw)
    return Job(**fields)


async def add(store: Store, **kw: Any) -> Server:
    server = make_server(**kw)
    await store.create_server(server, make_job(server.id))
    return server


async def active(store: Store, **kw: Any) -> Server:
    return await add(store, vm_state=VmState.ACTIVE, task_state=None, power_state=PowerState.RUNNING, **kw)


# -- create / get -----------------------------------------------------------------------------

async def test_create_then_get_round_trips_every_field(store: Store) -> None:
    server = make_server(
        vm_state=VmState.ERROR, task_state=None, power_state=PowerState.CRASHED, progress=42,
        metadata={"role": "db", "ünïcode": "ok ✓"}, access_ipv4="192.0.2.7", access_ipv6="2001:db8::7",
        shutdown_terminate=True, reservation_id="r-abc12345",
        fault=Fault(code=500, message="boom", created=T0 + timedelta(seconds=1)),
        launched_at=T0 + timedelta(minutes=1), deleted_at=None, security_groups=("web", "ssh"),
        scheduler_hints={"group": "g-1", "same_host": ["a", "b"], "query": {"x": [1, 2]}})
    job = make_job(server.id, payload={"password_hash": "$6$x", "files": [{"path": "/etc/motd"}]})
    await store.create_server(server, job)
    assert store.get_server(server.id) == server
    assert store.get_job(job.id) == job


async def test_datetimes_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    plus2 = timezone(timedelta(hours=2))
    server = await add(store, created_at=T0.astimezone(plus2), launched_at=T0.astimezone(plus2))
    got = store.get_server(server.id)
    assert got is not None
    assert got.created_at == T0 and got.created_at.utcoffset() == timedelta(0)
    assert got.launched_at == T0 and got.launched_at.utcoffset() == timedelta(0)


async def test_naive_datetimes_are_refused_with_value_error(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        await add(store, created_at=datetime(2024, 1, 1))  # naive: the point of the test
    assert store.list_servers(include_deleted=True) == []


async def test_create_refuses_a_job_for_another_server(store: Store) -> None:
    server = make_server()
    with pytest.raises(ValueError):
        await store.create_server(server, make_job(uuid.uuid4()))
    assert store.get_server(server.id) is None


async def test_a_duplicate_server_id_is_a_store_error_and_writes_nothing(store: Store) -> None:
    server = await add(store)
    second_job = make_job(server.id)
    with pytest.raises(StoreError):
        await store.create_server(server.model_copy(update={"name": "other"}), second_job)
    assert store.get_server(server.id) == server
    assert store.get_job(second_job.id) is None
    assert len(store.events_since(0)) == 1


def test_get_unknown_server_is_none(store: Store) -> None:
    assert store.get_server(uuid.uuid4()) is None


async def test_get_includes_deleted_servers(store: Store) -> None:
    server = await add(store, vm_state=VmState.DELETED, task_state=None, deleted_at=T0)
    assert store.get_server(server.id) == server


async def test_returned_servers_are_copies_the_caller_cannot_change(store: Store) -> None:
    server = await add(store, metadata={"a": "1"})
    got = store.get_server(server.id)
    assert got is not None
    got.metadata["a"] = "changed"
    assert store.get_server(server.id) == server


# -- project scoping --------------------------------------------------------------------------

async def test_another_projects_server_is_invisible_not_an_error(store: Store) -> None:
    mine, theirs = await add(store, project_id="p1"), await add(store, project_id="p2")
    assert store.get_server(theirs.id, project_id="p1") is None
    assert store.get_server(mine.id, project_id="p1") == mine
    assert [s.id for s in store.list_servers("p1")] == [mine.id]
    assert [s.id for s in store.list_servers("p1", include_deleted=True)] == [mine.id]
    assert [s.id for s in store.list_servers("p1", changes_since=T0)] == [mine.id]


# -- listing ----------------------------------------------------------------------------------

async def test_list_is_newest_first_then_by_id_descending(store: Store) -> None:
    old = await add(store, created_at=T0)
    new = await add(store, created_at=T0 + timedelta(seconds=1))
    tie_a = await add(store, id=uuid.UUID(int=1), created_at=T0 + timedelta(microseconds=1))
    tie_b = await add(store, id=uuid.UUID(int=2), created_at=T0 + timedelta(microseconds=1))
    assert [s.id for s in store.list_servers()] == [new.id, tie_b.id, tie_a.id, old.id]


async def test_a_list_after_a_change_shows_the_change_and_lists_give_their_own_copies(
        store: Store) -> None:
    """The SQLite store reads whole only the rows changed since its last list: a change
    between two lists must show in the second, and a caller's edit of one list's metadata
    must not reach the next."""
    a, b = await active(store, metadata={"k": "v"}), await active(store)
    first = {s.id: s for s in store.list_servers("p1")}
    await store.update_server(a.id, {"name": "renamed", "metadata": {"k": "w"}}, cause="api")
    first[b.id].metadata["edited"] = "by a caller"
    second = {s.id: s for s in store.list_servers("p1")}
    assert (second[a.id].name, second[a.id].metadata) == ("renamed", {"k": "w"})
    assert second[b.id].metadata == {}
    assert (first[a.id].name, first[a.id].metadata) == ("vm", {"k": "v"})  # as it was then


async def test_list_leaves_out_deleted_unless_include_deleted(store: Store) -> None:
    alive = await add(store, created_at=T0)
    gone = await add(store, vm_state=VmState.DELETED, task_state=None, deleted_at=T0,
               created_at=T0 + timedelta(seconds=1))
    assert [s.id for s in store.list_servers()] == [alive.id]
    assert [s.id for s in store.list_servers(include_deleted=True)] == [gone.id, alive.id]


async def test_list_pages_after_a_marker_with_a_limit_in_the_stored_order(store: Store) -> None:
    made = [await add(store, created_at=T0 + timedelta(seconds=i)) for i in range(5)]
    newest_first = [s.id for s in reversed(made)]
    assert [s.id for s in store.list_servers(limit=2)] == newest_first[:2]
    assert [s.id for s in store.list_servers(marker=newest_first[1], limit=2)] == newest_first[2:4]
    assert [s.id for s in store.list_servers(marker=newest_first[3])] == newest_first[4:]
    assert store.list_servers(limit=0) == []


async def test_list_refuses_a_marker_that_is_not_in_the_listed_servers(store: Store) -> None:
    mine = await add(store, project_id="p1")
    theirs = await add(store, project_id="p2")
    with pytest.raises(InvalidInput, match="marker"):
        store.list_servers("p1", marker=theirs.id)
    with pytest.raises(InvalidInput, match="marker"):
        store.list_servers(marker=uuid.uuid4())
    assert store.list_servers("p1", marker=mine.id) == []


async def test_list_filters_by_image_flavor_and_reservation(store: Store) -> None:
    image = uuid.uuid4()
    a = await add(store, image_id=image, flavor_id="1", reservation_id="r-aaaaaaaa")
    b = await add(store, image_id=image, flavor_id="2")
    await add(store, flavor_id="1")
    assert {s.id for s in store.list_servers(image_id=image)} == {a.id, b.id}
    assert {s.id for s in store.list_servers(image_id=image, flavor_id="2")} == {b.id}
    assert [s.id for s in store.list_servers(reservation_id="r-aaaaaaaa")] == [a.id]


async def test_state_counts_group_servers_not_deleted_by_vm_and_task_state(store: Store) -> None:
    await active(store)
    await active(store)
    await add(store, vm_state=VmState.BUILDING, task_state=TaskState.SPAWNING)
    await add(store, vm_state=VmState.DELETED, task_state=None, deleted_at=T0)
    assert store.server_state_counts() == {(VmState.ACTIVE, None): 2,
                                           (VmState.BUILDING, TaskState.SPAWNING): 1}


async def test_flavor_counts_are_a_projects_servers_not_deleted_but_the_one_left_out(
        store: Store) -> None:
    await active(store, flavor_id="1")
    left_out = await active(store, flavor_id="1")
    await active(store, flavor_id="2")
    await add(store, flavor_id="2", vm_state=VmState.DELETED, task_state=None, deleted_at=T0)
    await active(store, flavor_id="1", project_id="other")
    assert store.flavor_counts("p1") == {"1": 2, "2": 1}
    assert store.flavor_counts("p1", without=left_out.id) == {"1": 1, "2": 1}
    assert store.flavor_counts("nobody") == {}


async def test_the_revision_moves_on_with_every_write_and_only_then(store: Store) -> None:
    """API answers are kept while the revision stays: every kind of write moves it on
    (servers, jobs, ports), reads never do."""
    seen = [store.revision()]
    server = await active(store)
    seen.append(store.revision())
    await store.update_server(server.id, {"name": "x"}, cause="api")
    seen.append(store.revision())
    await store.add_job(make_job(server.id))
    seen.append(store.revision())
    await store.release_ports(str(server.id))
    seen.append(store.revision())
    store.list_servers()
    store.get_server(server.id)
    store.server_state_counts()
    assert store.revision() == seen[-1]
    assert seen == sorted(set(seen)), seen


async def test_a_server_read_again_after_a_change_is_the_changed_one(store: Store) -> None:
    """Reads may reuse what they parsed before (the SQLite store does), never a stale one."""
    server = await active(store)
    assert store.list_servers()[0].name == "vm"
    await store.update_server(server.id, {"name": "renamed"}, cause="api")
    assert store.list_servers()[0].name == "renamed"
    assert store.get_server(server.id).name == "renamed"


async def test_changes_since_includes_deleted_changed_at_or_after_it(store: Store) -> None:
    unchanged = await add(store)
    deleted_long_ago = await add(store, vm_state=VmState.DELETED, task_state=None, deleted_at=T0)
    changed, deleted_now = await active(store), await active(store)
    mark = datetime.now(UTC)
    await store.update_server(changed.id, {"name": "renamed"}, cause="api")
    await store.update_server(deleted_now.id, {"vm_state": VmState.DELETED}, cause="delete")
    got = {s.id for s in store.list_servers(changes_since=mark)}
    assert got == {changed.id, deleted_now.id}
    assert {s.id for s in store.list_servers(changes_since=T0)} == {
        unchanged.id, deleted_long_ago.id, changed.id, deleted_now.id}  # >=, not >
    assert store.list_servers(changes_since=datetime.now(UTC) + timedelta(days=1)) == []


# -- update_server ----------------------------------------------------------------------------

async def test_update_applies_changes_and_bumps_updated_at(store: Store) -> None:
    server = await active(store)
    before = datetime.now(UTC)
    got = await store.update_server(server.id, {"name": "new", "metadata": {"k": "v"}, "progress": 50},
                              cause="api")
    assert (got.name, got.metadata, got.progress) == ("new", {"k": "v"}, 50)
    assert got.updated_at >= before
    assert store.get_server(server.id) == got


async def test_update_with_matching_expect_applies(store: Store) -> None:
    server = await active(store)
    got = await store.update_server(server.id, {"task_state": TaskState.REBOOTING}, cause="reboot",
                              expect=ACTIVE)
    assert got.status is Status.REBOOT


async def test_update_with_stale_expect_raises_and_changes_nothing(store: Store) -> None:
    server = await add(store)  # building/spawning
    with pytest.raises(StaleServer, match="building"):
        await store.update_server(server.id, {"task_state": TaskState.REBOOTING}, cause="reboot",
                            expect=ACTIVE)
    assert store.get_server(server.id) == server
    assert len(store.events_since(0)) == 1


async def test_expect_compares_task_state_too(store: Store) -> None:
    server = await active(store)
    rebooting = ServerExpectation(vm_state=VmState.ACTIVE, task_state=TaskState.REBOOTING)
    with pytest.raises(StaleServer):
        await store.update_server(server.id, {"task_state": None}, cause="x", expect=rebooting)


async def test_update_unknown_server_raises_server_not_found(store: Store) -> None:
    with pytest.raises(ServerNotFound):
        await store.update_server(uuid.uuid4(), {"name": "x"}, cause="api")


@pytest.mark.parametrize("changes", [
    {"no_such_field": 1}, {"id": uuid.uuid4()}, {"project_id": "p2"}, {"created_at": T0},
    {"updated_at": T0}, {"progress": 101}, {"vm_state": "not-a-state"},
    {"launched_at": datetime(2024, 1, 1)},  # naive on purpose
])
async def test_update_refuses_bad_changes_with_value_error_and_changes_nothing(
        store: Store, changes: dict[str, Any]) -> None:
    server = await active(store)
    with pytest.raises(ValueError):
        await store.update_server(server.id, changes, cause="api")
    assert store.get_server(server.id) == server


async def test_becoming_deleted_sets_deleted_at(store: Store) -> None:
    server = await active(store)
    before = datetime.now(UTC)
    got = await store.update_server(server.id, {"vm_state": VmState.DELETED, "task_state": None},
                              cause="delete")
    assert got.deleted_at is not None and got.deleted_at >= before
    assert got.deleted_at == got.updated_at


async def test_a_given_deleted_at_is_kept(store: Store) -> None:
    server = await active(store)
    got = await store.update_server(server.id, {"vm_state": VmState.DELETED, "deleted_at": T0}, cause="d")
    assert got.deleted_at == T0


async def test_concurrent_compare_and_set_has_exactly_one_winner(store: Store) -> None:
    server = await active(store)
    barrier, results = threading.Barrier(8), []

    async def attempt() -> None:
        barrier.wait()
        try:
            await store.update_server(server.id, {"task_state": TaskState.REBOOTING}, cause="reboot",
                                expect=ACTIVE)
            results.append("won")
        except StaleServer:
            results.append("stale")

    threads = [threading.Thread(target=asyncio.run, args=(attempt(),)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["stale"] * 7 + ["won"]
    assert [e.new_status for e in store.events_since(1)] == ["REBOOT"]


# -- events -----------------------------------------------------------------------------------

async def test_create_appends_a_first_event_from_none(store: Store) -> None:
    server = await add(store)
    [event] = store.events_since(0)
    assert (event.server_id, event.project_id, event.old_status, event.new_status) == (
        server.id, "p1", None, "BUILD")
    assert event.seq >= 1 and event.at.utcoffset() == timedelta(0)


async def test_events_only_on_status_change_in_order_with_cause_and_power_state(store: Store) -> None:
    server = await add(store)
    await store.update_server(server.id, {"progress": 50}, cause="progress")  # BUILD -> BUILD
    await store.update_server(server.id, {"task_state": None}, cause="noop")  # building: still BUILD
    await store.update_server(server.id, {"vm_state": VmState.ACTIVE, "power_state": PowerState.RUNNING},
                        cause="spawned")
    await store.update_server(server.id, {"task_state": TaskState.POWERING_OFF}, cause="stop")  # ACTIVE
    await store.update_server(server.id, {"vm_state": VmState.STOPPED, "task_state": None,
                                    "power_state": PowerState.SHUTDOWN}, cause="libvirt:stopped")
    events = store.events_since(0)
    assert [(e.old_status, e.new_status, e.cause, e.power_state) for e in events] == [
        (None, "BUILD", "create", 0),
        ("BUILD", "ACTIVE", "spawned", 1),
        ("ACTIVE", "SHUTOFF", "libvirt:stopped", 4),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.seq for e in events}) == 3


async def test_events_since_is_after_seq_by_project_and_limited(store: Store) -> None:
    a, b = await add(store, project_id="pa"), await add(store, project_id="pb")
    await store.update_server(a.id, {"vm_state": VmState.ERROR}, cause="fail")
    await store.update_server(b.id, {"vm_state": VmState.ERROR}, cause="fail")
    everything = store.events_since(0)
    assert len(everything) == 4
    assert store.events_since(everything[1].seq) == everything[2:]
    assert [e.server_id for e in store.events_since(0, project_id="pa")] == [a.id, a.id]
    assert store.events_since(0, limit=3) == everything[:3]
    assert store.events_since(everything[-1].seq) == []


# -- jobs -------------------------------------------------------------------------------------

async def test_add_job_with_server_changes_applies_both_and_an_event(store: Store) -> None:
    server = await active(store)
    job = make_job(server.id, kind=JobKind.DELETE)
    got = await store.add_job(job, {"task_state": TaskState.DELETING}, cause="api:delete", expect=ACTIVE)
    assert got.task_state is TaskState.DELETING and got == store.get_server(server.id)
    assert store.get_job(job.id) == job
    # ACTIVE + deleting still shows ACTIVE: no status change, so no event.
    assert [e.cause for e in store.events_since(0)] == ["create"]
    stop = make_job(server.id)
    await store.add_job(stop, {"vm_state": VmState.ERROR}, cause="api:x")
    assert [e.cause for e in store.events_since(0)] == ["create", "api:x"]


async def test_add_job_without_changes_leaves_the_server_as_it_is(store: Store) -> None:
    server = await active(store)
    job = make_job(server.id)
    assert await store.add_job(job) == server
    assert store.get_server(server.id) == server


async def test_add_job_with_stale_expect_adds_no_job_and_changes_nothing(store: Store) -> None:
    server = await add(store)
    job = make_job(server.id, kind=JobKind.DELETE)
    with pytest.raises(StaleServer):
        await store.add_job(job, {"task_state": TaskState.DELETING}, cause="api", expect=ACTIVE)
    assert store.get_job(job.id) is None
    assert store.get_server(server.id) == server


async def test_add_job_with_bad_changes_adds_no_job(store: Store) -> None:
    server = await active(store)
    job = make_job(server.id)
    with pytest.raises(ValueError):
        await store.add_job(job, {"progress": -1}, cause="api")
    assert store.get_job(job.id) is None
    assert store.get_server(server.id) == server


async def test_add_job_for_unknown_server_raises_server_not_found(store: Store) -> None:
    job = make_job(uuid.uuid4())
    with pytest.raises(ServerNotFound):
        await store.add_job(job)
    assert store.get_job(job.id) is None


async def test_unfinished_jobs_are_queued_or_running_oldest_first(store: Store) -> None:
    s1 = await add(store, created_at=T0)  # its create job is at T0
    s2 = await add(store, created_at=T0)
    late = make_job(s1.id, created_at=T0 + timedelta(hours=1))
    early = make_job(s2.id, status=JobStatus.RUNNING, created_at=T0 - timedelta(hours=1))
    done = make_job(s1.id, status=JobStatus.SUCCEEDED, created_at=T0 - timedelta(hours=2))
    failed = make_job(s1.id, status=JobStatus.FAILED, created_at=T0 - timedelta(hours=2))
    for job in (late, early, done, failed):
        await store.add_job(job)
    got = store.unfinished_jobs()
    # The two create jobs share T0: insertion order breaks the tie.
    assert [(j.id, j.server_id) for j in got] == [
        (early.id, s2.id), (got[1].id, s1.id), (got[2].id, s2.id), (late.id, s1.id)]
    assert {got[1].kind, got[2].kind} == {JobKind.CREATE}


async def test_update_job_changes_fields_and_bumps_updated_at(store: Store) -> None:
    server = await add(store)
    [job] = store.unfinished_jobs()
    before = datetime.now(UTC)
    got = await store.update_job(job.id, {"status": JobStatus.RUNNING, "step": "disk_prepared",
                                    "attempts": 1, "payload": {}})
    assert (got.status, got.step, got.attempts, got.payload) == (JobStatus.RUNNING, "disk_prepared", 1, {})
    assert got.updated_at >= before and got.created_at == job.created_at
    assert store.get_job(job.id) == got
    await store.update_job(job.id, {"status": JobStatus.SUCCEEDED})
    assert store.unfinished_jobs() == []
    assert store.get_server(server.id) == server  # a job change is not a server change


async def test_update_unknown_job_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="not found"):
        await store.update_job(uuid.uuid4(), {"step": "x"})


@pytest.mark.parametrize("changes", [{"nope": 1}, {"id": uuid.uuid4()}, {"server_id": uuid.uuid4()},
                                     {"status": "bogus"}])
async def test_update_job_refuses_bad_changes(store: Store, changes: dict[str, Any]) -> None:
    await add(store)
    [job] = store.unfinished_jobs()
    with pytest.raises(ValueError):
        await store.update_job(job.id, changes)
    assert store.get_job(job.id) == job


async def test_a_payload_that_is_not_json_is_refused_without_showing_it(store: Store) -> None:
    server = await active(store)
    job = make_job(server.id, payload={"secret": {"s3cr3t-value"}})
    with pytest.raises(ValueError) as info:
        await store.add_job(job)
    assert "s3cr3t" not in str(info.value)
    assert store.get_job(job.id) is None


def test_a_closed_store_raises_store_error(store: Store) -> None:
    store.close()  # type: ignore[attr-defined]
    with pytest.raises(StoreError):
        store.get_server(uuid.uuid4())


# -- the event listener and webhook cursors ---------------------------------------------------

async def test_the_event_listener_is_called_after_each_commit_that_appended_events(store: Store) -> None:
    calls: list[int] = []
    store.set_event_listener(lambda: calls.append(len(store_events(store))))
    server = await add(store)  # BUILD: one event
    await store.update_server(server.id, {"progress": 10}, cause="progress")  # no status change
    await store.add_job(make_job(server.id, kind=JobKind.DELETE))  # a job alone: no event
    with pytest.raises(StaleServer):
        await store.update_server(server.id, {"vm_state": VmState.ERROR}, cause="x", expect=ACTIVE)
    await store.update_server(server.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
    # Called once per such commit, and the events are readable when it is called.
    assert calls == [1, 2]
    store.set_event_listener(None)
    await store.update_server(server.id, {"vm_state": VmState.ERROR}, cause="fail")
    assert calls == [1, 2]


def store_events(store: Store) -> list[Any]:
    return store.events_since(0)


async def test_a_new_webhook_cursor_starts_at_the_newest_event_and_stays(store: Store) -> None:
    assert await store.webhook_cursor("http://a.example/hook") == 0  # no events yet
    server = await add(store)
    await store.update_server(server.id, {"vm_state": VmState.ACTIVE}, cause="spawned")
    head = store.events_since(0)[-1].seq
    assert await store.webhook_cursor("http://b.example/hook") == head
    await store.update_server(server.id, {"vm_state": VmState.ERROR}, cause="fail")
    # An existing cursor does not follow the head: its events are still to be delivered.
    assert await store.webhook_cursor("http://b.example/hook") == head
    assert await store.webhook_cursor("http://a.example/hook") == 0


async def test_a_webhook_cursor_only_moves_forward_and_per_url(store: Store) -> None:
    await store.webhook_cursor("http://a.example/hook")
    await store.advance_webhook_cursor("http://a.example/hook", 5)
    await store.advance_webhook_cursor("http://a.example/hook", 3)  # a late, older acknowledgement
    assert await store.webhook_cursor("http://a.example/hook") == 5
    await store.advance_webhook_cursor("http://c.example/hook", 2)  # no cursor yet: made at 2
    assert await store.webhook_cursor("http://c.example/hook") == 2
    assert await store.webhook_cursor("http://a.example/hook") == 5
