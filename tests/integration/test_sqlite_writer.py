"""The SQLite store's one writer thread: group commit, failures alone, readers never wait,
close drains, a dead writer fails its callers instead of hanging them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters.sqlite_store import SqliteStore
from agent.errors import ServerNotFound, StoreError
from tests.integration.test_store_contract import make_job, make_server

LONG_S = 30.0  # a bound no passing test comes near


class Gate:
    """A test hook for the writer: the writer thread waits at the gate before each group
    until the test opens it, so the test knows what is queued when the group is taken."""

    def __init__(self, store: SqliteStore) -> None:
        self.reached = threading.Event()
        self.open = threading.Event()
        store._writer.before_group = self._wait

    def _wait(self) -> None:
        self.reached.set()
        assert self.open.wait(LONG_S), "the test never opened the gate"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state" / "agent.db")
    yield s
    s.close()


async def held_writer(store: SqliteStore) -> tuple[Gate, asyncio.Task]:
    """The writer busy with a first write (held at the gate); that write's task."""
    gate = Gate(store)
    server = make_server()
    first = asyncio.create_task(store.create_server(server, make_job(server.id)))
    assert await asyncio.to_thread(gate.reached.wait, LONG_S)
    return gate, first


async def test_concurrent_writes_commit_together_in_fewer_transactions(store: SqliteStore):
    gate, first = await held_writer(store)
    servers = [make_server() for _ in range(20)]
    writes = [asyncio.create_task(store.create_server(s, make_job(s.id))) for s in servers]
    await asyncio.sleep(0)  # every write is queued behind the held one
    before = store.write_transactions
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(first, *writes), LONG_S)
    assert store.write_transactions - before == 2  # the held write's, then one for the 20
    assert store.write_requests == 21
    other = SqliteStore(store.path)  # durable: another connection sees every one
    try:
        assert {s.id for s in other.list_servers()} >= {s.id for s in servers}
    finally:
        other.close()


async def test_a_failing_write_in_a_group_fails_alone(store: SqliteStore):
    gate, first = await held_writer(store)
    a, b = make_server(), make_server()
    good_a = asyncio.create_task(store.create_server(a, make_job(a.id)))
    bad = asyncio.create_task(store.update_server(make_server().id, {"name": "x"}, cause="t"))
    good_b = asyncio.create_task(store.create_server(b, make_job(b.id)))
    await asyncio.sleep(0)
    before = store.write_transactions
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(first, good_a, good_b), LONG_S)
    with pytest.raises(ServerNotFound):
        await bad
    assert store.write_transactions - before == 2
    assert store.get_server(a.id) is not None and store.get_server(b.id) is not None


async def test_reads_answer_while_the_writer_is_busy(store: SqliteStore):
    server = make_server()
    await store.create_server(server, make_job(server.id))
    gate, first = await held_writer(store)
    update = asyncio.create_task(store.update_server(server.id, {"name": "renamed"}, cause="t"))
    await asyncio.sleep(0)
    # The writer is held mid-group: a read still answers, with what is committed.
    assert store.get_server(server.id).name == server.name
    assert len(store.list_servers()) == 1
    revision = store.revision()
    gate.open.set()
    renamed = await asyncio.wait_for(update, LONG_S)
    await first
    assert renamed.name == "renamed" and store.get_server(server.id).name == "renamed"
    assert store.revision() > revision  # moved on only once the commit is visible


async def test_close_commits_what_is_queued_then_refuses_writes(tmp_path: Path):
    store = SqliteStore(tmp_path / "agent.db")
    gate, first = await held_writer(store)
    servers = [make_server() for _ in range(5)]
    writes = [asyncio.create_task(store.create_server(s, make_job(s.id))) for s in servers]
    await asyncio.sleep(0)
    closing = asyncio.create_task(asyncio.to_thread(store.close))
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(first, closing, *writes), LONG_S)
    with pytest.raises(StoreError, match="closed"):
        await store.create_server(servers[0], make_job(servers[0].id))
    reopened = SqliteStore(tmp_path / "agent.db")
    try:
        assert len(reopened.list_servers()) == 6
    finally:
        reopened.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_writer_that_died_fails_its_callers_instead_of_hanging_them(store: SqliteStore):
    gate, first = await held_writer(store)
    queued = make_server()
    second = asyncio.create_task(store.create_server(queued, make_job(queued.id)))
    await asyncio.sleep(0)

    def die() -> None:
        raise SystemExit("the writer thread is gone")
    store._writer.before_group = die
    gate.open.set()  # the held group finishes; the next one dies before it starts
    await asyncio.wait_for(first, LONG_S)
    with pytest.raises(StoreError):
        await asyncio.wait_for(second, LONG_S)
    with pytest.raises(StoreError):
        await store.update_server(queued.id, {"name": "x"}, cause="t")
