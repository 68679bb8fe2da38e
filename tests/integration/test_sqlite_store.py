"""What only the SQLite store has: a private file, WAL, a versioned schema, durability
across reopen, and all-or-nothing transactions when SQLite itself fails."""

from __future__ import annotations

import sqlite3
import stat
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from agent.adapters import sqlite_schema
from agent.adapters.sqlite_store import SqliteStore
from agent.core.metrics import Metrics
from agent.errors import StoreError
from agent.model.states import TaskState, VmState
from tests.integration.test_store_contract import make_job, make_server


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path)
    yield s
    s.close()


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain connection to the file, closed at the end of the `with`."""
    return closing(sqlite3.connect(path, isolation_level=None))


async def test_the_file_is_0600_in_a_0700_folder(store: SqliteStore, db_path: Path) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    server = make_server()
    await store.create_server(server, make_job(server.id))
    for extra in db_path.parent.glob("state.db-*"):  # -wal, -shm
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_an_existing_file_with_loose_mode_is_tightened(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    db_path.touch(mode=0o644)
    db_path.chmod(0o644)
    SqliteStore(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_wal_foreign_keys_and_full_sync_are_on(store: SqliteStore) -> None:
    conn = store._writer_conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_user_version_is_the_latest_migration(store: SqliteStore, db_path: Path) -> None:
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_schema.MIGRATIONS)
    assert sqlite_schema.LATEST_VERSION == len(sqlite_schema.MIGRATIONS) >= 1


async def test_reopening_keeps_servers_jobs_and_events(db_path: Path) -> None:
    first = SqliteStore(db_path)
    server, job = make_server(), make_job(make_server().id)
    job = job.model_copy(update={"server_id": server.id})
    await first.create_server(server, job)
    updated = await first.update_server(server.id, {"vm_state": VmState.ERROR, "task_state": None},
                                  cause="fail")
    events = first.events_since(0)
    first.close()
    again = SqliteStore(db_path)
    try:
        assert again.get_server(server.id) == updated
        assert again.get_job(job.id) == job
        assert again.events_since(0) == events
    finally:
        again.close()


def test_servers_stored_before_step_4_read_back_with_default_group_and_no_hints(db_path: Path) -> None:
    """Step 4 adds security_groups and scheduler_hints; older rows get Nova's defaults."""
    server = make_server()
    db_path.parent.mkdir(mode=0o700)
    with raw(db_path) as conn:
        for statement in (st for step in sqlite_schema.MIGRATIONS[:3] for st in step):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO servers (id, project_id, user_id, name, image_id, flavor_id, vm_state,"
            " task_state, power_state, progress, metadata, access_ipv4, access_ipv6,"
            " shutdown_terminate, fault, created_at, updated_at) VALUES"
            " (?, 'p1', 'u1', 'vm', ?, '1', 'active', NULL, 1, 100, '{}', '', '', 0, NULL, ?, ?)",
            (str(server.id), str(server.image_id), server.created_at.isoformat(timespec="microseconds"),
             server.updated_at.isoformat(timespec="microseconds")))
    store = SqliteStore(db_path)
    try:
        got = store.get_server(server.id)
        assert got is not None
        assert (got.security_groups, got.scheduler_hints) == (("default",), {})
    finally:
        store.close()


def test_a_database_from_a_newer_release_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).close()
    with raw(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_schema.LATEST_VERSION + 1}")
    with pytest.raises(StoreError, match="newer release"):
        SqliteStore(db_path)


async def test_a_failed_event_insert_rolls_back_the_server_change(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()
    await store.create_server(server, make_job(server.id))

    def disk_full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_append_event", disk_full)
    with pytest.raises(StoreError, match="disk is full") as info:
        await store.update_server(server.id, {"vm_state": VmState.ERROR, "task_state": None}, cause="x")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    monkeypatch.undo()
    assert store.get_server(server.id) == server
    assert len(store.events_since(0)) == 1
    # The store is still usable after the failure.
    await store.update_server(server.id, {"task_state": TaskState.SPAWNING, "progress": 5}, cause="y")


async def test_a_really_full_database_writes_nothing_and_shows_no_payload(store: SqliteStore) -> None:
    """SQLITE_FULL from SQLite itself (max_page_count reached), not a simulation."""
    conn = store._writer_conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    server = make_server(metadata={"k": "v" * 200})
    job = make_job(server.id, payload={"password_hash": "TOP-SECRET-" + "x" * 100_000})
    with pytest.raises(StoreError, match="full") as info:
        await store.create_server(server, job)
    assert "TOP-SECRET" not in str(info.value)
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert store.get_server(server.id) is None
    assert store.get_job(job.id) is None
    assert store.events_since(0) == []


def test_jobs_and_events_must_belong_to_a_known_server(store: SqliteStore, db_path: Path) -> None:
    """foreign_keys=ON: the schema itself refuses an orphan job."""
    with raw(db_path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO jobs VALUES (?, ?, 'create', 'queued', '', '{}', '', 0, '', '')",
                         (str(uuid.uuid4()), str(uuid.uuid4())))


async def test_a_second_store_on_the_same_file_sees_committed_writes(store: SqliteStore,
                                                                    db_path: Path) -> None:
    other = SqliteStore(db_path)
    try:
        server = make_server()
        await store.create_server(server, make_job(server.id))
        assert other.get_server(server.id) == server
    finally:
        other.close()


async def test_write_transactions_are_counted_and_shown_as_a_metric(store: SqliteStore) -> None:
    """Each committed write transaction counts once (reads and failed writes do not), and
    /metrics shows the count: a build's fsync'd commits can be measured."""
    before = store.write_transactions
    server = make_server()
    await store.create_server(server, make_job(server.id))
    await store.update_server(server.id, {"name": "x"}, cause="test")
    store.get_server(server.id)
    store.list_servers()
    with pytest.raises(StoreError):
        await store.update_job(uuid.uuid4(), {"step": "disk"})
    assert store.write_transactions == before + 2
    metrics = Metrics()
    metrics.watch_servers(store)
    text = metrics.exposition()[0].decode()
    assert f"compute_agent_store_write_transactions_total {before + 2}.0" in text
    assert 'compute_agent_servers{status="BUILD"} 1.0' in text
