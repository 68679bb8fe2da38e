"""The API over a real ServerService and an in-memory store, driven through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest
from starlette.applications import Starlette

from agent.adapters.ssh_keys import CryptographySshKeys
from agent.api.app import ApiDeps, create_api
from agent.api.auth import TokenInfo
from agent.core.console import Consoles
from agent.core.event_feed import EventFeed, EventNotifier
from agent.core.flavors import FlavorCatalog
from agent.core.images import ImageService
from agent.core.keypairs import KeypairService
from agent.core.networks import NetworkCatalog, PortService
from agent.core.servers import ServerService
from agent.model.image import Image
from agent.model.network import Network
from agent.model.passwords import PasswordPolicy
from agent.model.requests import Limits, RequestContext
from agent.model.server import Server
from agent.model.states import TaskState, VmState
from tests.unit.fakes.consoles import FakeConsoleFiles
from tests.unit.fakes.images import FakeImageCatalog, make_image
from tests.unit.fakes.store import MemoryStore

HOST = "hv-test-01"
ALICE = {"X-Auth-Token": "tok-alice"}
BOB = {"X-Auth-Token": "tok-bob"}
ADMIN = {"X-Auth-Token": "tok-admin"}
TOKENS = {
    "tok-alice": TokenInfo(project_id="p-alice", user_id="alice"),
    "tok-bob": TokenInfo(project_id="p-bob", user_id="bob"),
    "tok-admin": TokenInfo(project_id="p-admin", user_id="root", is_admin=True),
}
# The one network of the API tests' host (no bridge is ever made: the API only allocates).
TEST_NET = Network(id=UUID("7d9a3c52-4e1f-4b8a-9c6d-2f0e1a3b5c71"), name="private", bridge="br-test",
                   cidr="10.213.0.0/24")
LIMITS = Limits(max_total_instances=3, max_total_cores=20, max_total_ram=51200, max_server_meta=5,
                max_personality=2, max_total_ports=6)


@dataclass
class Env:
    client: httpx.AsyncClient
    app: Starlette
    deps: ApiDeps
    store: MemoryStore
    images: FakeImageCatalog
    cirros: Image
    big: Image
    kicked: list[UUID] = field(default_factory=list)

    def server(self, server_id: str | UUID) -> Server:
        found = self.store.get_server(UUID(str(server_id)))
        assert found is not None
        return found

    async def set_state(self, server_id: str | UUID, vm_state: VmState,
                  task_state: TaskState | None = None, **changes: Any) -> Server:
        return await self.store.update_server(UUID(str(server_id)), {
            "vm_state": vm_state, "task_state": task_state, **changes}, cause="test")

    async def create(self, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        """Create a server (defaults: cirros, flavor 1); the 202 body's "server"."""
        body = {"name": "vm", "imageRef": str(self.cirros.uuid), "flavorRef": "1", **fields}
        r = await self.client.post("/v2.1/servers", json={"server": body}, headers=headers or ALICE)
        assert r.status_code == 202, r.text
        return r.json()["server"]

    async def create_active(self, headers: dict[str, str] | None = None, **fields: Any) -> str:
        server_id = (await self.create(headers, **fields))["id"]
        await self.set_state(server_id, VmState.ACTIVE)
        return server_id


def build_env(*, default_context: RequestContext | None = None, max_body_bytes: int | None = None,
              limits: Limits = LIMITS) -> tuple[ApiDeps, MemoryStore, FakeImageCatalog, list[UUID]]:
    store = MemoryStore()
    images = FakeImageCatalog([
        make_image("cirros", properties={"os_distro": "cirros"}),
        make_image("big", min_disk=2, min_ram=1024),
    ])
    flavors = FlavorCatalog()
    kicked: list[UUID] = []
    ports = PortService(store, NetworkCatalog([TEST_NET]), limits=limits)
    service = ServerService(store, images, flavors, limits, PasswordPolicy(), kick=kicked.append,
                            ports=ports)
    deps = ApiDeps(servers=service, flavors=flavors, images=ImageService(images, store),
                   quotas=service.quotas, ports=ports, events=EventFeed(store, EventNotifier()),
                   keypairs=KeypairService(store, CryptographySshKeys(), limits),
                   consoles=Consoles(FakeConsoleFiles()), host_id=HOST, tokens=dict(TOKENS),
                   default_context=default_context)
    if max_body_bytes is not None:
        deps.max_body_bytes = max_body_bytes
    return deps, store, images, kicked


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    deps, store, images, kicked = build_env()
    app = create_api(deps)
    async with client_for(app) as client:
        yield Env(client=client, app=app, deps=deps, store=store, images=images,
                  cirros=images.get("cirros"), big=images.get("big"), kicked=kicked)


def fault(response: httpx.Response, status: int, name: str) -> str:
    """Assert an OpenStack fault body of that status and name; its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == [name], body
    assert body[name]["code"] == status
    assert isinstance(body[name]["message"], str) and body[name]["message"]
    return body[name]["message"]
