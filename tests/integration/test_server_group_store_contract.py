"""The Store's server group methods, proven against SqliteStore and MemoryStore alike: a
group round-trips, lists are per project and oldest first, delete is for good; members
are the servers not deleted created with the group's hint, oldest first. And a database
from before server groups is migrated with its servers intact."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.adapters import sqlite_schema
from agent.adapters.sqlite_store import SqliteStore
from agent.errors import ServerGroupNotFound
from agent.model.scheduling import GroupPolicy, ServerGroup
from agent.model.states import VmState
from agent.protocols import Store
from tests.integration.test_store_contract import make_job, make_server
from tests.unit.fakes.store import MemoryStore

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Any = SqliteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def group(name: str = "g", project_id: str = "p1", **kw: Any) -> ServerGroup:
    fields: dict[str, Any] = {"id": uuid.uuid4(), "project_id": project_id, "user_id": "u1",
                              "name": name, "policy": GroupPolicy.ANTI_AFFINITY, "created_at": T0}
    fields.update(kw)
    return ServerGroup(**fields)


async def member(store: Store, g: ServerGroup, minutes: int = 0, **kw: Any):
    server = make_server(scheduler_hints={"group": str(g.id)},
                         created_at=T0 + timedelta(minutes=minutes), **kw)
    await store.create_server(server, make_job(server.id))
    return server


async def test_a_group_round_trips_with_its_created_time_in_utc(store: Store):
    g = group(created_at=T0.astimezone(timezone(timedelta(hours=2))), policy=GroupPolicy.SOFT_AFFINITY)
    stored = await store.add_server_group(g)
    assert stored == g.model_copy(update={"created_at": T0})
    assert stored.created_at.utcoffset() == timedelta(0)
    assert store.get_server_group(g.id) == stored
    assert store.get_server_group(uuid.uuid4()) is None


async def test_lists_are_per_project_oldest_first_and_delete_is_for_good(store: Store):
    b = await store.add_server_group(group("b", created_at=T0 + timedelta(seconds=1)))
    a = await store.add_server_group(group("a", created_at=T0))
    other = await store.add_server_group(group("x", project_id="p2"))
    assert [g.name for g in store.list_server_groups("p1")] == ["a", "b"]
    assert {g.id for g in store.list_server_groups()} == {a.id, b.id, other.id}
    assert (await store.delete_server_group(b.id)).name == "b"
    assert store.get_server_group(b.id) is None
    assert [g.name for g in store.list_server_groups("p1")] == ["a"]
    with pytest.raises(ServerGroupNotFound, match=f"Instance group {b.id} could not be found."):
        await store.delete_server_group(b.id)


async def test_members_are_the_hinted_servers_not_deleted_oldest_first(store: Store):
    g = await store.add_server_group(group())
    other = await store.add_server_group(group("other", created_at=T0 + timedelta(seconds=1)))
    second = await member(store, g, minutes=2)
    first = await member(store, g, minutes=1)
    others = await member(store, other)
    plain = make_server()
    await store.create_server(plain, make_job(plain.id))
    assert store.get_server_group(g.id).members == (first.id, second.id)
    assert [x.members for x in store.list_server_groups("p1")] == [(first.id, second.id), (others.id,)]
    await store.update_server(first.id, {"vm_state": VmState.DELETED, "task_state": None}, cause="deleted")
    assert store.get_server_group(g.id).members == (second.id,)
    deleted = await store.delete_server_group(g.id)
    assert deleted.members == (second.id,)
    assert store.get_server(second.id).scheduler_hints == {"group": str(g.id)}  # the hint stays


async def test_a_database_from_before_server_groups_gets_them_and_keeps_its_servers(tmp_path: Path):
    before = next(i for i, step in enumerate(sqlite_schema.MIGRATIONS)
                  if any("CREATE TABLE server_groups" in statement for statement in step))
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in sqlite_schema.MIGRATIONS[:before]:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {before}")
    conn.close()
    store = SqliteStore(path)
    try:
        g = await store.add_server_group(group())
        old = await member(store, g)
        assert store.get_server_group(g.id).members == (old.id,)
    finally:
        store.close()
