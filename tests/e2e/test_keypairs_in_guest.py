"""Keypairs as the guest sees them: a server created with key_name has that public key
in root's ~/.ssh/authorized_keys (.ssh 0700, the file 0600, root:root: what sshd's
StrictModes accepts), read on its serial console; rebuild with another key_name puts
the new key, and only it, on the fresh disk. key_name shows in the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.acting import ServerUnderTest, module_daemon
from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e

# An ed25519 public key made for this test (its private half was thrown away).
IMPORTED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWQp/A3mkPeSvRYJpbw/1lBq2h6I2KBVhdSOnBLyicz"
            " bob@desk")


@pytest.fixture(scope="module")
def agent() -> Iterator[Daemon]:
    with module_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def keys(agent: Daemon) -> dict[str, str]:
    """Two keypairs of alice's: one imported, one generated (its public key)."""
    with agent.client() as api:
        r = api.post("/os-keypairs", json={"keypair": {"name": "laptop", "public_key": IMPORTED}})
        assert r.status_code == 200, r.text
        r = api.post("/os-keypairs", json={"keypair": {"name": "made-here"}})
        assert r.status_code == 200, r.text
        made = r.json()["keypair"]
        assert made["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    return {"laptop": IMPORTED, "made-here": made["public_key"]}


@pytest.fixture(scope="module")
def server(agent: Daemon, keys: dict[str, str]) -> ServerUnderTest:
    return ServerUnderTest.create(agent, key_name="laptop")


def authorized_keys_as_root_sees_them(server: ServerUnderTest) -> str:
    with server.shell() as con:
        rc, out = con.run("ls -ln -d /root/.ssh")
        assert rc == 0, out
        assert out.split()[0] == "drwx------" and out.split()[2:4] == ["0", "0"], out
        rc, out = con.run("ls -ln /root/.ssh/authorized_keys")
        assert rc == 0, out
        assert out.split()[0] == "-rw-------" and out.split()[2:4] == ["0", "0"], out
        rc, out = con.run("cat /root/.ssh/authorized_keys")
        assert rc == 0, out
        return out


def test_the_named_key_is_in_roots_authorized_keys(server, keys):
    assert server.show()["key_name"] == "laptop"
    assert authorized_keys_as_root_sees_them(server) == keys["laptop"] + "\n"


def test_rebuild_with_another_key_name_puts_only_that_key_on_the_fresh_disk(server, keys):
    r = server.act({"rebuild": {"imageRef": server.show()["image"]["id"],
                                "adminPass": "Rebuilt-Passw0rd", "key_name": "made-here"}})
    assert r.json()["server"]["key_name"] == "made-here"
    server.password = "Rebuilt-Passw0rd"
    assert server.wait("ACTIVE", timeout=300)["key_name"] == "made-here"
    assert authorized_keys_as_root_sees_them(server) == keys["made-here"] + "\n"
