"""The ports table of the SQLite store: statements and row mapping, each function run
inside a transaction SqliteStore opened. The table's UNIQUE constraints (an address per
network, a MAC) are what makes allocation safe; their violations become the core's
IpAddressInUse / MacAddressInUse."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC
from typing import Any
from uuid import UUID

from agent.errors import IpAddressInUse, MacAddressInUse, PortInUse, PortNotFound, StoreError
from agent.model.network import Port, PortStatus

_INSERT = """INSERT INTO ports (id, network_id, project_id, name, mac, ip, device_id,
    device_owner, device_index, status, created_by_agent, created_at)
  VALUES (:id, :network_id, :project_id, :name, :mac, :ip, :device_id, :device_owner,
    :device_index, :status, :created_by_agent, :created_at)"""
_ORDER = " ORDER BY device_index, created_at, id"


def _params(p: Port) -> dict[str, Any]:
    if p.created_at.utcoffset() is None:
        raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
    return {"id": str(p.id), "network_id": str(p.network_id), "project_id": p.project_id,
            "name": p.name, "mac": p.mac, "ip": str(p.ip), "device_id": p.device_id,
            "device_owner": p.device_owner, "device_index": p.device_index,
            "status": p.status.value, "created_by_agent": int(p.created_by_agent),
            "created_at": p.created_at.astimezone(UTC).isoformat(timespec="microseconds")}


def _row(row: sqlite3.Row) -> Port:
    data = dict(row)
    data["created_by_agent"] = bool(data["created_by_agent"])
    return Port.model_validate(data)


def _load(conn: sqlite3.Connection, port_id: UUID | str) -> Port | None:
    row = conn.execute("SELECT * FROM ports WHERE id = ?", (str(port_id),)).fetchone()
    return _row(row) if row is not None else None


def insert(conn: sqlite3.Connection, port: Port) -> None:
    try:
        conn.execute(_INSERT, _params(port))
    except sqlite3.IntegrityError as e:
        text = str(e)
        if "ports.ip" in text:
            raise IpAddressInUse(f"Unable to complete operation for network {port.network_id}. "
                                 f"The IP address {port.ip} is in use.") from None
        if "ports.mac" in text:
            raise MacAddressInUse(f"Unable to complete operation for network {port.network_id}. "
                                  f"The mac address {port.mac} is in use.") from None
        if "ports.id" in text:
            raise StoreError(f"state database: add port failed: port {port.id} exists") from None
        raise


def bind(conn: sqlite3.Connection, port: Port) -> None:
    """Bind an existing free port as `port` says (device fields), or refuse."""
    cur = conn.execute(
        "UPDATE ports SET device_id = ?, device_owner = ?, device_index = ? "
        "WHERE id = ? AND device_id = ''",
        (port.device_id, port.device_owner, port.device_index, str(port.id)))
    if cur.rowcount == 1:
        return
    current = _load(conn, port.id)
    if current is None:
        raise PortNotFound(f"Port {port.id} could not be found.")
    raise PortInUse(f"Port {port.id} is still in use.")


def select(conn: sqlite3.Connection, network_id: UUID | None, device_id: str | None,
           project_id: str | None) -> list[Port]:
    where, params = [], []
    for column, value in (("network_id", network_id), ("device_id", device_id),
                          ("project_id", project_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(str(value))
    # Fixed fragments only; every value is bound.
    sql = "SELECT * FROM ports" + (" WHERE " + " AND ".join(where) if where else "") + _ORDER  # noqa: S608
    return [_row(r) for r in conn.execute(sql, params).fetchall()]


def get(conn: sqlite3.Connection, port_id: UUID) -> Port | None:
    return _load(conn, port_id)


def set_status(conn: sqlite3.Connection, port_ids: Sequence[UUID], status: str) -> None:
    value = PortStatus(status).value
    conn.executemany("UPDATE ports SET status = ? WHERE id = ?",
                     [(value, str(i)) for i in port_ids])


def delete(conn: sqlite3.Connection, port_id: UUID) -> Port:
    current = _load(conn, port_id)
    if current is None:
        raise PortNotFound(f"Port {port_id} could not be found.")
    if current.bound:
        raise PortInUse(f"Port {port_id} is in use by server {current.device_id}: delete the "
                        "server first.")
    conn.execute("DELETE FROM ports WHERE id = ?", (str(port_id),))
    return current


def release(conn: sqlite3.Connection, device_id: str) -> list[Port]:
    if not device_id:
        return []
    ports = select(conn, None, device_id, None)
    conn.execute("DELETE FROM ports WHERE device_id = ? AND created_by_agent = 1", (device_id,))
    conn.execute("UPDATE ports SET device_id = '', device_owner = '', device_index = 0, "
                 "status = ? WHERE device_id = ?", (PortStatus.DOWN.value, device_id))
    return ports
