"""The real OpenStack clients (openstacksdk, python-novaclient) against the real daemon:
create, import, list and delete keypairs; create guests with a key_name (novaclient: three
at once, min_count/max_count), see them ACTIVE and running under libvirt with that
key_name, list them, change metadata, delete them; and each client gets its own clear
exception for a bad request and for another project's server. There is no Keystone: a
fixed endpoint and a token are used, and every request is checked to have gone to the
daemon on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc
from openstack import connection
from openstack import exceptions as sdk_exc

from tests.e2e.conftest import IMAGE_ID
from tests.support.daemon import TOKENS, Daemon, agent_domains

TIMEOUT = 120
# An ed25519 public key made for these tests; what `ssh-keygen -l -E md5` says of it.
PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWQp/A3mkPeSvRYJpbw/1lBq2h6I2KBVhdSOnBLyicz"
              " bob@desk")
FINGERPRINT = "ec:c4:32:a1:ac:3c:9d:39:97:e4:ad:cd:e2:a7:88:4f"
PRIVATE_PEM = "-----BEGIN RSA PRIVATE KEY-----"

# Deprecations raised inside openstacksdk 4.x itself, not by the calls made here.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'service_type' parameter is unnecesary"),
]


class Recorded:
    """A keystoneauth session for one user whose every request URL is recorded, so the
    test can show nothing went anywhere but the daemon."""

    def __init__(self, daemon: Daemon, user: str) -> None:
        self.endpoint = daemon.url + "/v2.1"
        self.urls: list[str] = []
        http = requests.Session()
        http.hooks["response"].append(lambda r, *a, **kw: self.urls.append(r.request.url))
        self.session = ks_session.Session(
            auth=token_endpoint.Token(self.endpoint, TOKENS[user][0]), session=http,
            timeout=30)

    def assert_only_daemon(self, daemon: Daemon) -> None:
        assert self.urls, "no request recorded"
        stray = [u for u in self.urls if not u.startswith(daemon.url + "/")]
        assert not stray, stray


def sdk(rec: Recorded) -> connection.Connection:
    return connection.Connection(session=rec.session, compute_endpoint_override=rec.endpoint,
                                 compute_api_version="2.1")


def fetch_metadata(conn: connection.Connection, server_id: str) -> dict[str, str]:
    # fetch_server_metadata replaced get_server_metadata (deprecated) within SDK 4.x
    fetch = getattr(conn.compute, "fetch_server_metadata", None) or conn.compute.get_server_metadata
    return dict(fetch(server_id).metadata)


def nova(rec: Recorded) -> nova_client.Client:
    return nova_client.Client("2.1", session=rec.session, endpoint_override=rec.endpoint,
                              timeout=30)


@contextlib.contextmanager
def deleted_after(daemon: Daemon, ids: list[str]) -> Iterator[None]:
    """Whatever the test created is deleted through the API even when it fails (the
    daemon fixture removes any domain left after that)."""
    try:
        yield
    finally:
        with daemon.client() as api:
            for server_id in ids:
                with contextlib.suppress(Exception):
                    api.delete(f"/servers/{server_id}")
            for server_id in ids:
                with contextlib.suppress(Exception):
                    daemon.wait_status(server_id, {"DELETED"}, timeout=60)


def test_openstacksdk_create_show_list_metadata_delete(daemon):
    rec = Recorded(daemon, "alice")
    conn = sdk(rec)
    ids: list[str] = []
    with deleted_after(daemon, ids):
        made = conn.compute.create_keypair(name="sdk-made")
        assert made.private_key.startswith(PRIVATE_PEM) and made.public_key.startswith("ssh-rsa ")
        imported = conn.compute.create_keypair(name="sdk-imported", public_key=PUBLIC_KEY)
        assert (imported.fingerprint, imported.private_key) == (FINGERPRINT, None)
        assert sorted(k.name for k in conn.compute.keypairs()) == ["sdk-imported", "sdk-made"]
        assert conn.compute.get_keypair("sdk-made").public_key == made.public_key
        with pytest.raises(sdk_exc.ConflictException):
            conn.compute.create_keypair(name="sdk-made")

        created = conn.compute.create_server(name="sdk-1", image_id=IMAGE_ID, flavor_id="1",
                                             metadata={"role": "web"}, key_name="sdk-imported")
        ids.append(created.id)
        assert created.admin_password and len(created.admin_password) >= 8

        server = conn.compute.wait_for_server(created, status="ACTIVE", failures=["ERROR"],
                                              interval=1, wait=TIMEOUT)
        assert server.status == "ACTIVE"
        assert agent_domains(daemon.state_dir) == {created.id: "running"}

        shown = conn.compute.get_server(created.id)
        assert shown.name == "sdk-1"
        assert shown.image.id == IMAGE_ID
        assert shown.metadata == {"role": "web"}
        assert shown.power_state == 1
        assert shown.admin_password is None  # only on create
        assert shown.key_name == "sdk-imported"

        assert created.id in [s.id for s in conn.compute.servers(details=False)]
        detailed = {s.id: s for s in conn.compute.servers(details=True)}
        assert detailed[created.id].status == "ACTIVE"
        assert detailed[created.id].name == "sdk-1"
        # `server list --status`: as Nova 2.1, any case; an unknown status lists nothing (200)
        assert created.id in [s.id for s in conn.compute.servers(status="active")]
        assert list(conn.compute.servers(status="SHUTOFF")) == []
        assert list(conn.compute.servers(status="bogus")) == []

        conn.compute.set_server_metadata(created.id, tier="front", owner="alice")
        assert fetch_metadata(conn, created.id) == {"role": "web", "tier": "front",
                                                   "owner": "alice"}
        conn.compute.delete_server_metadata(created.id, ["tier"])
        assert fetch_metadata(conn, created.id) == {"role": "web", "owner": "alice"}

        conn.compute.delete_server(created.id)
        # A client's retried DELETE while the first one runs: 204 again, as from Nova.
        again = rec.session.delete(f"{rec.endpoint}/servers/{created.id}", raise_exc=False)
        assert again.status_code == 204, again.text
        conn.compute.wait_for_delete(server, interval=1, wait=TIMEOUT)
        with pytest.raises(sdk_exc.NotFoundException):
            conn.compute.get_server(created.id)
        assert agent_domains(daemon.state_dir) == {}
        assert created.id not in [s.id for s in conn.compute.servers()]

        for name in ("sdk-made", "sdk-imported"):
            conn.compute.delete_keypair(name)
        assert list(conn.compute.keypairs()) == []
        with pytest.raises(sdk_exc.NotFoundException):
            conn.compute.get_keypair("sdk-made")
    rec.assert_only_daemon(daemon)


def injection_batch_sizes(daemon: Daemon) -> list[int]:
    """The size of each injection batch (appliance launch) the daemon has logged."""
    events = (json.loads(line) for line in daemon.log().splitlines() if line.startswith("{"))
    return [e["size"] for e in events if e.get("event") == "injection.batch"]


def test_novaclient_multi_create_show_list_metadata_delete(daemon):
    """`nova boot --min-count 3 --max-count 3`: three guests named nova-1..3 from one
    request, injected in one appliance launch, all ACTIVE, all deleted."""
    rec = Recorded(daemon, "alice")
    nc = nova(rec)
    ids: list[str] = []
    with deleted_after(daemon, ids):
        flavors = {f.id: f for f in nc.flavors.list()}
        assert flavors["1"].name == "m1.tiny" and flavors["1"].ram == 256
        limits = nc.limits.get()
        absolute = {a.name: a.value for a in limits.absolute}
        assert "maxTotalInstances" in absolute and "totalInstancesUsed" in absolute

        generated = nc.keypairs.create("nova-made")
        assert generated.private_key.startswith(PRIVATE_PEM)
        imported = nc.keypairs.create("nova-imported", public_key=PUBLIC_KEY)
        assert imported.fingerprint == FINGERPRINT
        assert sorted(k.name for k in nc.keypairs.list()) == ["nova-imported", "nova-made"]
        with pytest.raises(nova_exc.BadRequest):
            nc.servers.create("bad", IMAGE_ID, "1", key_name="no-such-key")

        created = nc.servers.create("nova", IMAGE_ID, "1", meta={"role": "db"},
                                    key_name="nova-made", min_count=3, max_count=3)
        assert len(created.adminPass) >= 8
        made = {s.name: s for s in nc.servers.list() if s.name.startswith("nova-")}
        ids.extend(s.id for s in made.values())
        assert set(made) == {"nova-1", "nova-2", "nova-3"}
        assert created.id == made["nova-1"].id  # the answer is the first server's

        deadline = time.monotonic() + 3 * TIMEOUT  # three guests booting under TCG at once
        while time.monotonic() < deadline:
            statuses = {nc.servers.get(i).status for i in ids}
            if statuses <= {"ACTIVE", "ERROR"}:
                break
            time.sleep(2)
        for server_id in ids:
            got = nc.servers.get(server_id)
            assert got.status == "ACTIVE", (got.name, getattr(got, "fault", None))
        assert agent_domains(daemon.state_dir) == {i: "running" for i in ids}
        assert injection_batch_sizes(daemon) == [3]

        server = nc.servers.get(created.id)
        assert server.name == "nova-1"
        assert server.image["id"] == IMAGE_ID
        assert server.metadata == {"role": "db"}
        assert {nc.servers.get(i).key_name for i in ids} == {"nova-made"}
        assert nc.limits.get().absolute  # still answers with servers counted

        assert created.id in [s.id for s in nc.servers.list(detailed=False)]
        [listed] = [s for s in nc.servers.list() if s.id == created.id]
        assert listed.status == "ACTIVE" and listed.name == "nova-1"
        assert sorted(s.id for s in nc.servers.list(search_opts={"status": "ACTIVE"})) == sorted(ids)
        assert nc.servers.list(search_opts={"status": "bogus"}) == []

        nc.servers.set_meta(server, {"tier": "back", "owner": "alice"})
        assert nc.servers.get(created.id).metadata == {
            "role": "db", "tier": "back", "owner": "alice"}
        nc.servers.delete_meta(server, ["tier"])
        assert nc.servers.get(created.id).metadata == {"role": "db", "owner": "alice"}

        for server_id in ids:
            nc.servers.delete(server_id)
        nc.servers.delete(ids[0])  # retried while deleting: no error (204), as from Nova
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if not {s.id for s in nc.servers.list()} & set(ids):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"{ids} still there after {TIMEOUT}s")
        for server_id in ids:
            with pytest.raises(nova_exc.NotFound):
                nc.servers.get(server_id)
        assert agent_domains(daemon.state_dir) == {}

        nc.keypairs.delete("nova-made")
        nc.keypairs.delete(imported)
        assert nc.keypairs.list() == []
        with pytest.raises(nova_exc.NotFound):
            nc.keypairs.get("nova-made")
    rec.assert_only_daemon(daemon)


def test_clients_see_clear_errors_for_bad_request_and_other_projects_server(daemon):
    alice, bob = Recorded(daemon, "alice"), Recorded(daemon, "bob")
    conn, conn_bob = sdk(alice), sdk(bob)
    nc, nc_bob = nova(alice), nova(bob)

    with pytest.raises(sdk_exc.BadRequestException) as sdk_err:
        conn.compute.create_server(name="bad", image_id=IMAGE_ID, flavor_id="no-such-flavor")
    assert sdk_err.value.status_code == 400
    assert "flavorRef" in str(sdk_err.value)

    with pytest.raises(nova_exc.BadRequest) as nova_err:
        nc.servers.create("bad", IMAGE_ID, "no-such-flavor")
    assert nova_err.value.code == 400
    assert "flavorRef" in str(nova_err.value)

    assert list(conn.compute.servers()) == []  # nothing was made by the bad requests

    ids: list[str] = []
    with deleted_after(daemon, ids):
        created = conn.compute.create_server(name="alice-only", image_id=IMAGE_ID,
                                             flavor_id="1")
        ids.append(created.id)

        with pytest.raises(sdk_exc.NotFoundException):
            conn_bob.compute.get_server(created.id)
        with pytest.raises(sdk_exc.NotFoundException):
            conn_bob.compute.set_server_metadata(created.id, stolen="yes")
        with pytest.raises(nova_exc.NotFound):
            nc_bob.servers.get(created.id)
        with pytest.raises(nova_exc.NotFound):
            nc_bob.servers.delete(created.id)
        assert created.id not in [s.id for s in conn_bob.compute.servers()]
        assert created.id not in [s.id for s in nc_bob.servers.list()]

        # alice's server is untouched by bob's attempts
        assert conn.compute.get_server(created.id).metadata == {}
        daemon.wait_status(created.id, {"ACTIVE", "ERROR"}, timeout=TIMEOUT)
    for rec in (alice, bob):
        rec.assert_only_daemon(daemon)
