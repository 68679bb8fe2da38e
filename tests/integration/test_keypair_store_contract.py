"""The Store's keypair methods, proven against SqliteStore and MemoryStore alike: a name
is unique per user (also between threads), lists are by name and per user, delete is for
good; a server keeps its key_name and key_data. And on the real SQLite file: a generated
key's private half is nowhere in the database, and a database from before keypairs is
migrated with its servers intact."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.adapters import sqlite_schema
from agent.adapters.sqlite_store import SqliteStore
from agent.adapters.ssh_keys import CryptographySshKeys
from agent.core.keypairs import KeypairService
from agent.errors import KeypairExists, KeypairNotFound
from agent.model.keypair import Keypair
from agent.model.requests import Limits, RequestContext
from agent.protocols import Store
from tests.integration.test_store_contract import make_job, make_server
from tests.unit.fakes.store import MemoryStore

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWQp/A3mkPeSvRYJpbw/1lBq2h6I2KBVhdSOnBLyicz bob@desk"


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Any = SqliteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def keypair(name: str, user_id: str = "u1", **kw: Any) -> Keypair:
    fields: dict[str, Any] = {"user_id": user_id, "name": name, "public_key": KEY,
                              "fingerprint": "ec:c4", "created_at": T0}
    fields.update(kw)
    return Keypair(**fields)


async def test_a_keypair_round_trips_with_an_id_given_by_the_store(store: Store):
    stored = await store.add_keypair(keypair("k", created_at=T0.astimezone(timezone(timedelta(hours=2)))))
    assert stored.id > 0 and stored.created_at == T0 and stored.created_at.utcoffset() == timedelta(0)
    assert stored == keypair("k", id=stored.id)
    assert store.get_keypair("u1", "k") == stored
    assert store.get_keypair("u2", "k") is None
    assert (await store.add_keypair(keypair("other"))).id != stored.id


async def test_a_name_is_unique_per_user_only(store: Store):
    await store.add_keypair(keypair("k"))
    with pytest.raises(KeypairExists, match=r"Key pair 'k' already exists\."):
        await store.add_keypair(keypair("k", public_key="ssh-rsa AAAA other"))
    await store.add_keypair(keypair("k", user_id="u2"))
    assert store.get_keypair("u1", "k").public_key == KEY


async def test_lists_are_per_user_by_name_and_delete_is_for_good(store: Store):
    for name in ("b", "a", "c"):
        await store.add_keypair(keypair(name))
    await store.add_keypair(keypair("z", user_id="u2"))
    assert [k.name for k in store.list_keypairs("u1")] == ["a", "b", "c"]
    assert (await store.delete_keypair("u1", "b")).name == "b"
    assert [k.name for k in store.list_keypairs("u1")] == ["a", "c"]
    with pytest.raises(KeypairNotFound, match="Keypair b not found for user u1"):
        await store.delete_keypair("u1", "b")
    with pytest.raises(KeypairNotFound):
        await store.delete_keypair("u1", "z")  # another user's
    await store.add_keypair(keypair("b"))  # the name is free again


async def test_two_threads_adding_one_name_get_one_keypair(store: Store):
    errors: list[Exception] = []
    barrier = threading.Barrier(8)

    async def add(i: int) -> None:
        barrier.wait()
        try:
            await store.add_keypair(keypair("race", public_key=f"{KEY}{i}"))
        except KeypairExists as e:
            errors.append(e)

    threads = [threading.Thread(target=asyncio.run, args=(add(i),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 7 and len(store.list_keypairs("u1")) == 1


async def test_a_server_keeps_its_key_name_and_key_data(store: Store):
    server = make_server(key_name="k", key_data=KEY)
    await store.create_server(server, make_job(server.id))
    assert store.get_server(server.id) == server
    changed = await store.update_server(server.id, {"key_name": None, "key_data": None}, cause="rebuild")
    assert (changed.key_name, changed.key_data) == (None, None)


def test_a_generated_private_key_is_nowhere_in_the_database(tmp_path: Path):
    store = SqliteStore(tmp_path / "state.db")
    service = KeypairService(store, CryptographySshKeys(), Limits())
    _, private_key = asyncio.run(service.generate(RequestContext(project_id="p", user_id="u"),
                                                  "made"))
    store.close()
    lines = private_key.splitlines()[1:-1]
    assert len(lines) > 20  # a whole 2048-bit key's PEM body
    files = list(tmp_path.glob("state.db*"))
    assert files
    for f in files:
        data = f.read_bytes()
        for line in lines:
            assert line.encode() not in data, f


async def test_a_database_from_before_keypairs_gets_them_and_keeps_its_servers(tmp_path: Path):
    before = next(i for i, step in enumerate(sqlite_schema.MIGRATIONS)
                  if any("CREATE TABLE keypairs" in statement for statement in step))
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in sqlite_schema.MIGRATIONS[:before]:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {before}")
    conn.execute(
        "INSERT INTO servers (id, project_id, user_id, name, image_id, flavor_id, vm_state, "
        "task_state, power_state, progress, metadata, access_ipv4, access_ipv6, "
        "shutdown_terminate, fault, created_at, updated_at, launched_at, deleted_at) "
        "VALUES ('11111111-1111-4111-8111-111111111111', 'p', 'u', 'old', "
        "'22222222-2222-4222-8222-222222222222', '1', 'active', NULL, 1, 100, '{}', '', '', 0, "
        "NULL, '2024-05-01T12:00:00.000000+00:00', '2024-05-01T12:00:00.000000+00:00', NULL, NULL)")
    conn.close()
    store = SqliteStore(path)
    try:
        [server] = store.list_servers()
        assert (server.name, server.key_name, server.key_data) == ("old", None, None)
        assert (await store.add_keypair(keypair("k"))).id == 1
    finally:
        store.close()
