"""Opening the state database: its two connections (the writer's, with WAL, FULL sync,
secure_delete and the migrations; the readers'), the WAL truncation, and a read-only look
for doctor."""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from pathlib import Path
from uuid import UUID

from agent.adapters.sqlite_schema import migrate
from agent.errors import StoreError

BUSY_TIMEOUT_S = 5.0


def truncate_wal(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and truncate it to zero bytes, so that frames holding
    old page images (a payload before it was cleared) are gone from the -wal file. Best
    effort: a reader in another process holding it back (SQLite then reports busy), or a
    full disk, leaves it for the next clear or start; it never fails what called it."""
    with suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def read_server_ids(path: Path) -> set[UUID]:
    """Every server the database at `path` has a row for, deleted ones too, read without
    writing anything (doctor runs beside the daemon). No file or no schema yet: none."""
    if not Path(path).exists():
        return set()
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open state database {path}: {e}") from e
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'servers'").fetchone() is None:
            return set()
        return {UUID(row[0]) for row in conn.execute("SELECT id FROM servers")}
    except sqlite3.Error as e:
        raise StoreError(f"state database {path}: cannot read servers: {e}") from e
    finally:
        conn.close()


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def open_writer(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"state database {path}: cannot use WAL (journal_mode={mode})")
        # FULL, not NORMAL: with WAL, NORMAL can lose the last commits on power loss.
        # The API answers 202 only after a job is committed ("durable first"), so a
        # commit must survive a power cut; the cost is one fsync of the WAL per commit
        # (per group of writes: see sqlite_writer).
        conn.execute("PRAGMA synchronous = FULL")
        # Deleted and overwritten content (a cleared job payload: file contents, a
        # password hash) is zeroed in the pages and the freelist, not left as free space.
        conn.execute("PRAGMA secure_delete = ON")
        migrate(conn, str(path))
        truncate_wal(conn)  # payloads cleared by a run killed before its checkpoint
    except BaseException:
        conn.close()
        raise
    return conn
