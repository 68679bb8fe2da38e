"""The SQLite store's ports, keypairs and server groups: each a thin pass-through to its
rows module (sqlite_ports, sqlite_keypairs, sqlite_server_groups), read on the reader
connection and written through the store's group-committing writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agent.adapters import sqlite_keypairs, sqlite_ports, sqlite_server_groups
from agent.model.keypair import Keypair
from agent.model.network import Port
from agent.model.scheduling import ServerGroup

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class CatalogRows:
    if TYPE_CHECKING:  # provided by SqliteStore
        def _tx(self, what: str, *, write: bool) -> AbstractContextManager[sqlite3.Connection]: ...
        async def _write_op(self, what: str, op: Callable[..., Any], *args: Any) -> Any: ...

    # -- ports ----------------------------------------------------------------------------

    async def add_port(self, port: Port) -> None:
        await self._write_op("add port", sqlite_ports.insert, port)

    def get_port(self, port_id: UUID) -> Port | None:
        with self._tx("get port", write=False) as conn:
            return sqlite_ports.get(conn, port_id)

    def list_ports(self, *, network_id: UUID | None = None, device_id: str | None = None,
                   project_id: str | None = None) -> list[Port]:
        with self._tx("list ports", write=False) as conn:
            return sqlite_ports.select(conn, network_id, device_id, project_id)

    async def set_port_status(self, port_ids: Sequence[UUID], status: str) -> None:
        await self._write_op("set port status", sqlite_ports.set_status, list(port_ids), status)

    async def delete_port(self, port_id: UUID) -> Port:
        return await self._write_op("delete port", sqlite_ports.delete, port_id)

    async def release_ports(self, device_id: str) -> list[Port]:
        return await self._write_op("release ports", sqlite_ports.release, device_id)

    # -- keypairs -------------------------------------------------------------------------

    async def add_keypair(self, keypair: Keypair) -> Keypair:
        return await self._write_op("add keypair", sqlite_keypairs.insert, keypair)

    def get_keypair(self, user_id: str, name: str) -> Keypair | None:
        with self._tx("get keypair", write=False) as conn:
            return sqlite_keypairs.get(conn, user_id, name)

    def list_keypairs(self, user_id: str) -> list[Keypair]:
        with self._tx("list keypairs", write=False) as conn:
            return sqlite_keypairs.select(conn, user_id)

    async def delete_keypair(self, user_id: str, name: str) -> Keypair:
        return await self._write_op("delete keypair", sqlite_keypairs.delete, user_id, name)

    # -- server groups --------------------------------------------------------------------

    async def add_server_group(self, group: ServerGroup) -> ServerGroup:
        return await self._write_op("add server group", sqlite_server_groups.insert, group)

    def get_server_group(self, group_id: UUID) -> ServerGroup | None:
        with self._tx("get server group", write=False) as conn:
            return sqlite_server_groups.get(conn, group_id)

    def list_server_groups(self, project_id: str | None = None) -> list[ServerGroup]:
        with self._tx("list server groups", write=False) as conn:
            return sqlite_server_groups.select(conn, project_id)

    async def delete_server_group(self, group_id: UUID) -> ServerGroup:
        return await self._write_op("delete server group", sqlite_server_groups.delete, group_id)
