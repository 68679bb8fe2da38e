"""The keypairs table of the SQLite store: statements and row mapping, each function run
inside a transaction SqliteStore opened. UNIQUE (user_id, name) decides a duplicate name,
whoever asks at the same time."""

from __future__ import annotations

import sqlite3
from datetime import UTC

from agent.errors import KeypairExists, KeypairNotFound
from agent.model.keypair import Keypair, exists_message, not_found_message

_INSERT = """INSERT INTO keypairs (user_id, name, type, public_key, fingerprint, created_at)
  VALUES (?, ?, ?, ?, ?, ?)"""


def _row(row: sqlite3.Row) -> Keypair:
    return Keypair.model_validate(dict(row))


def insert(conn: sqlite3.Connection, keypair: Keypair) -> Keypair:
    if keypair.created_at.utcoffset() is None:
        raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
    created = keypair.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    try:
        cur = conn.execute(_INSERT, (keypair.user_id, keypair.name, keypair.type,
                                     keypair.public_key, keypair.fingerprint, created))
    except sqlite3.IntegrityError as e:
        if "keypairs.user_id, keypairs.name" in str(e):
            raise KeypairExists(exists_message(keypair.name)) from None
        raise
    row = conn.execute("SELECT * FROM keypairs WHERE id = ?", (cur.lastrowid,)).fetchone()
    return _row(row)


def get(conn: sqlite3.Connection, user_id: str, name: str) -> Keypair | None:
    row = conn.execute("SELECT * FROM keypairs WHERE user_id = ? AND name = ?",
                       (user_id, name)).fetchone()
    return _row(row) if row is not None else None


def select(conn: sqlite3.Connection, user_id: str) -> list[Keypair]:
    rows = conn.execute("SELECT * FROM keypairs WHERE user_id = ? ORDER BY name, id",
                        (user_id,)).fetchall()
    return [_row(r) for r in rows]


def delete(conn: sqlite3.Connection, user_id: str, name: str) -> Keypair:
    current = get(conn, user_id, name)
    if current is None:
        raise KeypairNotFound(not_found_message(user_id, name))
    conn.execute("DELETE FROM keypairs WHERE id = ?", (current.id,))
    return current
