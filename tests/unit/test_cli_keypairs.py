"""`compute-agent keypair ...` and `server create --key-name` against the real API app
(in process): a made key's private key alone on stdout, an import's fingerprint, list,
show and delete, and the key name sent with a server create."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from structlog.testing import capture_logs

from agent.api.app import create_api
from agent.cli import _parser, keypairs, servers
from agent.cli.client import AgentClient, ApiError
from tests.unit.api.conftest import ALICE, build_env
from tests.unit.api.test_keypairs import ED_PUB, FINGERPRINT_ED


class InProcess:
    """What AgentClient needs of an httpx.Client, served by the app in this process."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="http://agent/v2.1", headers=ALICE) as c:
                return await c.request(method, path, **kw)
        return asyncio.run(send())

    def close(self) -> None:
        pass


@pytest.fixture
def client() -> Iterator[AgentClient]:
    deps, _, images, _ = build_env()
    c = AgentClient(url="http://unused")
    c._http.close()
    c._http = InProcess(create_api(deps))  # type: ignore[assignment]
    c.cirros = images.get("cirros")  # type: ignore[attr-defined]
    with capture_logs():  # the API's request log would go to stdout with the CLI's output
        yield c


def cli(client: AgentClient, *argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return (keypairs if args.command == "keypair" else servers).run(args, client)


def test_keypair_create_list_show_delete(client, capsys, tmp_path: Path):
    assert cli(client, "keypair", "create", "made") == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN RSA PRIVATE KEY-----") and "fingerprint" not in out
    (tmp_path / "id.pub").write_text(ED_PUB + "\n")
    assert cli(client, "keypair", "create", "mine", "--public-key", str(tmp_path / "id.pub")) == 0
    assert capsys.readouterr().out == FINGERPRINT_ED + "\n"
    cli(client, "keypair", "list")
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "FINGERPRINT"] and len(listed) == 3
    assert listed[2].split() == ["mine", FINGERPRINT_ED]
    cli(client, "keypair", "show", "mine")
    assert "bob@desk" in capsys.readouterr().out
    assert cli(client, "keypair", "delete", "mine") == 0
    with pytest.raises(ApiError, match="Keypair mine not found for user alice"):
        cli(client, "keypair", "show", "mine")


def test_server_create_sends_the_key_name(client, capsys):
    cli(client, "keypair", "create", "made")
    assert cli(client, "server", "create", "vm", "--image", str(client.cirros.uuid),
               "--flavor", "1", "--key-name", "made") == 0
    server_id = re.search(r"^id\s+(\S+)$", capsys.readouterr().out, re.MULTILINE)[1]
    assert client.get_server(server_id)["key_name"] == "made"
    with pytest.raises(ApiError, match=r"Invalid key_name provided\."):
        cli(client, "server", "create", "vm2", "--image", str(client.cirros.uuid),
            "--flavor", "1", "--key-name", "nope")
