"""The OpenAPI document is the same, byte for byte, as the one FastAPI served the app
with when it also served the requests (before the API was served by agent/api/routing.py):
clients and the fuzz tests read it, and a change of it must be a deliberate one.

The golden files were written by the code before that change (a single agent's document,
and the controller's, with /os-services and /os-hypervisors). To accept a deliberate
change: `UPDATE_GOLDEN=1 pytest tests/unit/api/test_openapi_golden.py`, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.api.app import create_api
from agent.core.host_admin import HostAdmin
from tests.unit.api.conftest import build_env, client_for
from tests.unit.fakes.hosts import MemoryHostRegistry

GOLDEN = Path(__file__).parent / "golden"


async def _document(*, controller: bool) -> bytes:
    deps, store, *_ = build_env()
    if controller:
        deps.hosts = HostAdmin(MemoryHostRegistry(), store, deps.flavors)
    async with client_for(create_api(deps)) as client:
        r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    return r.content


@pytest.mark.parametrize(("controller", "name"), [(False, "openapi.json"),
                                                  (True, "openapi-controller.json")])
async def test_the_document_is_byte_identical_to_the_golden_one(controller: bool, name: str):
    document = await _document(controller=controller)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(document)
    assert document == golden.read_bytes()


