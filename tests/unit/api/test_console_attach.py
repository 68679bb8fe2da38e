"""The serial console WebSocket (GET /v2.1/servers/{id}/console): bytes both ways between
the client and the guest's console socket; refused (close 4404/4401, with the reason)
for another project's server, a server with no console, or a bad token."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from uuid import UUID

import pytest
from starlette.websockets import WebSocketDisconnect

from agent.adapters.console_files import LocalConsoleFiles
from agent.api.app import create_api
from agent.core.console import Consoles, console_log, console_socket
from agent.core.guest_layout import InstanceFiles
from agent.model.states import VmState
from tests.unit.api.conftest import ALICE, BOB, build_env

with warnings.catch_warnings():  # starlette would like httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class FakeQemuConsole:
    """A unix socket answering each chunk it gets with `guest saw: <chunk>`."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.sendall(b"login: ")
            while data := conn.recv(1024):
                conn.sendall(b"guest saw: " + data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def setup() -> Iterator[tuple[TestClient, Path, object]]:
    deps, store, _images, _kicked = build_env()
    short = Path(tempfile.mkdtemp(prefix="ca-con-"))  # unix socket paths are short
    deps.consoles = Consoles(LocalConsoleFiles(partial(console_socket, short),
                                               partial(console_log, short)))
    try:
        with TestClient(create_api(deps)) as client:
            yield client, short, store
    finally:
        shutil.rmtree(short, ignore_errors=True)


def create(client: TestClient, store) -> str:
    r = client.post("/v2.1/servers", headers=ALICE,
                    json={"server": {"name": "vm", "imageRef": "cirros", "flavorRef": "1"}})
    assert r.status_code == 202, r.text
    server_id = r.json()["server"]["id"]
    asyncio.run(store.update_server(UUID(server_id), {"vm_state": VmState.ACTIVE, "task_state": None},
                                    cause="test"))
    return server_id


def test_bytes_go_both_ways_between_client_and_guest(setup):
    client, instances, store = setup
    server_id = create(client, store)
    files = InstanceFiles(instances, UUID(server_id))
    files.dir.mkdir(parents=True)
    guest = FakeQemuConsole(files.console_socket)
    try:
        with client.websocket_connect(f"/v2.1/servers/{server_id}/console",
                                      headers=ALICE) as ws:
            assert ws.receive_bytes() == b"login: "
            ws.send_bytes(b"root\r")
            assert ws.receive_bytes() == b"guest saw: root\r"
    finally:
        guest.close()


@pytest.mark.parametrize(("headers", "code", "reason"), [
    (BOB, 4404, "could not be found"),
    ({"X-Auth-Token": "nope"}, 4401, "Authentication required"),
    (ALICE, 4404, "does not have a console available"),  # no socket: no console yet
])
def test_refused_with_a_close_code_and_reason(setup, headers, code, reason):
    client, _instances, store = setup
    server_id = create(client, store)
    with client.websocket_connect(f"/v2.1/servers/{server_id}/console",
                                  headers=headers) as ws, \
            pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_bytes()
    assert closed.value.code == code
    assert reason in closed.value.reason
