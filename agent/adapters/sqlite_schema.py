"""The state database's schema, as ordered migration steps.

`PRAGMA user_version` records how many steps a database has had. At open, the missing
steps run in order, each in its own transaction together with the version bump, so a
crash mid-migration leaves the database at the previous version, never in between.
Append new steps at the end; never edit a step that has shipped.
"""

from __future__ import annotations

import sqlite3

from agent.errors import StoreError

# Datetimes are ISO-8601 UTC text with microseconds ("2024-05-01T12:00:00.000000+00:00"),
# so text order is time order. UUIDs are lowercase hyphenated text: text order is
# numeric order. metadata, fault and payload are JSON text.
_V1 = (
    """CREATE TABLE servers (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        image_id TEXT NOT NULL,
        flavor_id TEXT NOT NULL,
        vm_state TEXT NOT NULL,
        task_state TEXT,
        power_state INTEGER NOT NULL,
        progress INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        access_ipv4 TEXT NOT NULL,
        access_ipv6 TEXT NOT NULL,
        shutdown_terminate INTEGER NOT NULL,
        fault TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        launched_at TEXT,
        deleted_at TEXT
    )""",
    "CREATE INDEX servers_project_created ON servers (project_id, created_at)",
    "CREATE INDEX servers_created ON servers (created_at)",
    "CREATE INDEX servers_updated ON servers (updated_at)",
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        server_id TEXT NOT NULL REFERENCES servers (id),
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        step TEXT NOT NULL,
        payload TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX jobs_status_created ON jobs (status, created_at)",
    "CREATE INDEX jobs_server ON jobs (server_id)",
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        server_id TEXT NOT NULL REFERENCES servers (id),
        project_id TEXT NOT NULL,
        old_status TEXT,
        new_status TEXT NOT NULL,
        power_state INTEGER NOT NULL,
        cause TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX events_project_seq ON events (project_id, seq)",
)

# Ports: one fixed IPv4 address each. The UNIQUE constraints are the IPAM's guarantee:
# an address (or MAC) is allocated once, whoever asks at the same time. device_id is ''
# for a free port; ports are not tied to servers by a foreign key (a user's port outlives
# the servers it was bound to).
_V2 = (
    """CREATE TABLE ports (
        id TEXT PRIMARY KEY,
        network_id TEXT NOT NULL,
        project_id TEXT NOT NULL,
        name TEXT NOT NULL,
        mac TEXT NOT NULL UNIQUE,
        ip TEXT NOT NULL,
        device_id TEXT NOT NULL,
        device_owner TEXT NOT NULL,
        device_index INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_by_agent INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (network_id, ip)
    )""",
    "CREATE INDEX ports_device ON ports (device_id)",
    "CREATE INDEX ports_project ON ports (project_id)",
)

# Webhook delivery: the events table is the outbox; each webhook URL keeps the seq of the
# last event its receiver acknowledged, so delivery resumes there after a restart.
_V3 = (
    """CREATE TABLE webhook_cursors (
        url TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    )""",
)

# Multi-create: the servers one create request made share a reservation id (Nova's), which
# a list can filter on. Rows from before it have none (''). The security groups a create
# asked for (JSON list of names) and its scheduler hints (JSON object), kept with the
# server: shown in its view / for a scheduler to read.
_V4 = (
    "ALTER TABLE servers ADD COLUMN reservation_id TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX servers_reservation ON servers (reservation_id)",
    """ALTER TABLE servers ADD COLUMN security_groups TEXT NOT NULL DEFAULT '["default"]'""",
    "ALTER TABLE servers ADD COLUMN scheduler_hints TEXT NOT NULL DEFAULT '{}'",
)

# Keypairs, per user as in Nova (a name is unique per user); the public key only. A
# server keeps the name and the public key it was built with (key_name, key_data), so
# rebuild injects the same key after the keypair is deleted.
_V5 = (
    """CREATE TABLE keypairs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        public_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (user_id, name)
    )""",
    "ALTER TABLE servers ADD COLUMN key_name TEXT",
    "ALTER TABLE servers ADD COLUMN key_data TEXT",
)

# The fleet (issue 12): the host a server is placed on ('' until placed; older rows none).
_V6 = (
    "ALTER TABLE servers ADD COLUMN host TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX servers_host ON servers (host)",
)

# Server groups (Nova's /os-server-groups): one policy each. Their members are not a table:
# they are the servers created with the hint {"group": id} (kept in scheduler_hints), so a
# member is recorded in its server's own create transaction; the index finds them.
_V_SERVER_GROUPS = (
    """CREATE TABLE server_groups (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        policy TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX server_groups_project ON server_groups (project_id, created_at)",
    "CREATE INDEX servers_group ON servers (json_extract(scheduler_hints, '$.group'))",
)

# The controller's hosts (issue 12): made by a host's first heartbeat (kept as JSON),
# enabled or not (/os-services), and the last of its events applied (per-host seq).
_V_HOSTS = (
    """CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        heartbeat TEXT,
        heartbeat_at TEXT,
        last_event_seq INTEGER NOT NULL DEFAULT 0
    )""",
)

# MIGRATIONS[i] takes a database from user_version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V_SERVER_GROUPS,
                                          _V_HOSTS)
LATEST_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, where: str) -> None:
    """Bring the database up to LATEST_VERSION. The connection must be in autocommit
    mode (isolation_level=None). Refuses a database newer than this code."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > LATEST_VERSION:
        raise StoreError(
            f"state database {where} has schema version {version}, but this compute-agent "
            f"only knows up to version {LATEST_VERSION}: it was written by a newer release; "
            "upgrade compute-agent (downgrading the database is not supported)")
    for target in range(version + 1, LATEST_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            # PRAGMA takes no parameters; target is an int from range(), not input.
            conn.execute(f"PRAGMA user_version = {int(target)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
