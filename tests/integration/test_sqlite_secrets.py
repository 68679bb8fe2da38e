"""A job's secrets (personality file contents in base64, the password's crypt hash) leave
no trace in the state database's files once the job's payload is cleared: not in
agent.db (pages, free space, freelist), not in agent.db-wal, not in agent.db-shm."""

from __future__ import annotations

import base64
import secrets
import uuid
from pathlib import Path

import pytest

from agent.adapters.sqlite_store import SqliteStore
from agent.model.job import JobStatus
from tests.integration.test_store_contract import make_job, make_server


def _secret(size: int) -> bytes:
    # Printable, so the raw secret, its base64 and its JSON form are all greppable.
    return secrets.token_hex(size // 2).encode()


def _traces(state: Path, needles: list[bytes]) -> list[str]:
    """Which of the database's files hold which needle (by its first bytes)."""
    found = []
    for f in sorted(state.glob("agent.db*")):
        data = f.read_bytes()
        found += [f"{f.name}: {n[:12]!r}" for n in needles if n in data]
    return found


async def _job_with_secrets(store: SqliteStore, small: bytes, large: bytes, hash_: str) -> uuid.UUID:
    server = make_server()
    job = make_job(server.id, payload={
        "personality": [{"path": "/etc/small", "contents": base64.b64encode(small).decode()},
                        {"path": "/etc/large", "contents": base64.b64encode(large).decode()}],
        "admin_pass_hash": hash_})
    await store.create_server(server, job)
    await store.update_job(job.id, {"status": JobStatus.RUNNING, "step": "disk"})
    return job.id


async def _clear(store: SqliteStore, job_id: uuid.UUID, how: str) -> None:
    """The payload cleared as the job runner does (its last step, or its failure) or by hand."""
    job = store.get_job(job_id)
    if how == "last step":
        task = store.get_server(job.server_id).task_state
        await store.advance(job, "running", {"task_state": None}, task, end=True)
    elif how == "failed":
        await store.end_job(job_id, JobStatus.FAILED, error="boom")
    else:
        await store.update_job(job_id, {"status": JobStatus.SUCCEEDED, "payload": {}})


@pytest.mark.parametrize("how", ["last step", "failed", "update_job"])
@pytest.mark.parametrize("closed", [False, True], ids=["daemon-running", "after-close"])
async def test_a_cleared_payload_leaves_no_secret_in_db_wal_or_shm(tmp_path: Path, closed: bool,
                                                                   how: str) -> None:
    state = tmp_path / "state"
    store = SqliteStore(state / "agent.db")
    # Small: inside one page; large: spills over onto overflow pages (freed when cleared).
    small, large = _secret(40), _secret(20_000)
    hash_ = "$6$" + secrets.token_hex(8) + "$" + secrets.token_hex(40)
    job_id = await _job_with_secrets(store, small, large, hash_)
    needles = [small, large[:64], large[-64:], base64.b64encode(small),
               base64.b64encode(large)[:64], base64.b64encode(large)[-64:], hash_.encode()]
    assert _traces(state, needles), "the secrets are written before the clear (test sanity)"

    await _clear(store, job_id, how)
    # Other writes go on afterwards, as in a daemon: they must not bring the bytes back.
    other = make_server()
    await store.create_server(other, make_job(other.id))
    if closed:
        store.close()

    assert _traces(state, needles) == []
    if not closed:
        assert store.get_job(job_id).payload == {}
        store.close()


async def test_a_payload_cleared_by_a_run_killed_before_the_checkpoint_is_scrubbed_at_open(
        tmp_path: Path) -> None:
    """The clear is committed, the process dies before the WAL is truncated: the next
    open truncates it."""
    state = tmp_path / "state"
    store = SqliteStore(state / "agent.db")
    small = _secret(40)
    job_id = await _job_with_secrets(store, small, _secret(6000), "$6$salt$" + secrets.token_hex(40))
    store._scrub_wal = lambda _conn: None  # type: ignore[method-assign]  # killed right after the commit
    await store.update_job(job_id, {"status": JobStatus.SUCCEEDED, "payload": {}})
    # A copy of the files as the dead process left them (a live connection would
    # checkpoint on close).
    dead = tmp_path / "dead"
    dead.mkdir()
    for f in state.glob("agent.db*"):
        (dead / f.name).write_bytes(f.read_bytes())
    store.close()
    assert _traces(dead, [small, base64.b64encode(small)]), "test sanity: still in the WAL"

    reopened = SqliteStore(dead / "agent.db")
    try:  # while open: closing would checkpoint anyway
        assert _traces(dead, [small, base64.b64encode(small)]) == []
    finally:
        reopened.close()
