"""The server_groups table of the SQLite store: statements and row mapping, each function
run inside a transaction SqliteStore opened. A group's members are read from the servers
(not deleted) whose scheduler hint names it (index servers_group)."""

from __future__ import annotations

import sqlite3
from uuid import UUID

from agent.adapters.sqlite_rows import ts
from agent.errors import ServerGroupNotFound
from agent.model.scheduling import ServerGroup, group_not_found_message

_INSERT = """INSERT INTO server_groups (id, project_id, user_id, name, policy, created_at)
  VALUES (?, ?, ?, ?, ?, ?)"""
_MEMBERS = """SELECT id FROM servers WHERE json_extract(scheduler_hints, '$.group') = ?
  AND vm_state != 'deleted' ORDER BY created_at, id"""


def _row(conn: sqlite3.Connection, row: sqlite3.Row) -> ServerGroup:
    members = tuple(UUID(r[0]) for r in conn.execute(_MEMBERS, (row["id"],)).fetchall())
    return ServerGroup.model_validate({**dict(row), "members": members})


def insert(conn: sqlite3.Connection, group: ServerGroup) -> ServerGroup:
    conn.execute(_INSERT, (str(group.id), group.project_id, group.user_id, group.name,
                           group.policy.value, ts(group.created_at)))
    found = get(conn, group.id)
    assert found is not None  # just inserted, in this transaction
    return found


def get(conn: sqlite3.Connection, group_id: UUID) -> ServerGroup | None:
    row = conn.execute("SELECT * FROM server_groups WHERE id = ?", (str(group_id),)).fetchone()
    return _row(conn, row) if row is not None else None


def select(conn: sqlite3.Connection, project_id: str | None) -> list[ServerGroup]:
    if project_id is None:
        rows = conn.execute("SELECT * FROM server_groups ORDER BY created_at, id").fetchall()
    else:
        rows = conn.execute("SELECT * FROM server_groups WHERE project_id = ?"
                            " ORDER BY created_at, id", (project_id,)).fetchall()
    return [_row(conn, r) for r in rows]


def delete(conn: sqlite3.Connection, group_id: UUID) -> ServerGroup:
    current = get(conn, group_id)
    if current is None:
        raise ServerGroupNotFound(group_not_found_message(group_id))
    conn.execute("DELETE FROM server_groups WHERE id = ?", (str(group_id),))
    return current
