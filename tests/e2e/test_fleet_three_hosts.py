"""A real fleet of three (issue 12): `compute-agent controller serve` and three real agents
(own host names and state dirs) on the real broker (a vhost of this module's own) and
libvirtd, building real guests under TCG. The guests have no NIC: one network spanning
three agents on one machine needs the agents' bridges joined into one segment (the
networking tests' part); an agent refuses to start on a subnet another's bridge routes.

- Placement: six servers of one project land 2/2/2 with three hostIds, each a running
  domain on the host the controller names; another project's hostId differs on the same
  host; an anti-affinity group of four on three hosts: the fourth is ERROR "No valid host";
  a host disabled through /os-services gets no new server, enabled it does again.
- openstacksdk and python-novaclient drive the controller unchanged.
- An agent SIGKILLed mid-build is `down` within 35 s and gets nothing while down;
  restarted, its builds finish exactly once, and the controller's view equals its own.
- The broker SIGKILLed during six builds and restarted: every server ACTIVE, none in
  BUILD, the controller's view equals each agent's, every host `up` again.

One fleet serves the whole module (starting it is the slow part); after every test all
servers are deleted at the controller and nothing may be left on any host (domains,
instance folders, QEMU processes, live rows in its store), and a test that fails still
leaves no domain behind.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from novaclient import client as nova_client
from openstack import connection

from tests.e2e.conftest import IMAGE_ID
from tests.integration.test_amqp_bus import broker_running  # noqa: F401 - autouse
from tests.integration.test_fleet_controller import _rabbitmqctl
from tests.support import broker
from tests.support.daemon import (
    TOKENS,
    agent_domains,
    destroy_domains,
    instance_dirs,
    processes_naming,
    query_store,
)
from tests.support.fleet import Fleet

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'service_type' parameter is unnecesary"),
]

ADMIN_TOKEN = "tok-admin-fleet3-e2e"
HEARTBEAT_S = 2  # three missed (6 s) marks a host down: fits the 35 s the issue allows
BUILD_S = 900  # six TCG guests on a shared 2-CPU machine: generous, bounded
DOWN_S = 35  # issue 12: an agent killed is marked down within this


def until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def fleet_vhost() -> Iterator[str]:
    name = f"compute-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "compute-agent", ".*", ".*", ".*")
    yield name
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="module")
def fleet(fleet_vhost: str) -> Iterator[Fleet]:
    with tempfile.TemporaryDirectory(prefix="f3-", dir="/tmp") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # QEMU and dnsmasq run unprivileged below the agents' state dirs
        with Fleet(base, agents=3, vhost=fleet_vhost, heartbeat_s=HEARTBEAT_S,
                   controller_extra=(f'[[tokens]]\ntoken = "{ADMIN_TOKEN}"\n'
                                     'project_id = "admin"\nuser_id = "root"\nadmin = true\n'),
                   ) as running:
            try:
                with admin_client(running) as admin:
                    until("three hosts up at the controller",
                          lambda: up_hosts(admin) == set(running.hosts), 120)
                yield running
            finally:
                for agent in running.agents.values():
                    agent.kill()
                    destroy_domains(agent.state_dir)


def admin_client(fleet: Fleet) -> httpx.Client:
    return httpx.Client(base_url=fleet.controller.url + "/v2.1", timeout=30,
                        headers={"X-Auth-Token": ADMIN_TOKEN})


def up_hosts(admin: httpx.Client) -> set[str]:
    return {s["host"] for s in admin.get("/os-services").json()["services"]
            if s["state"] == "up"}


def service(admin: httpx.Client, host: str) -> dict[str, Any]:
    return next(s for s in admin.get("/os-services").json()["services"] if s["host"] == host)


def host_of(admin: httpx.Client, server_id: str) -> str:
    """The host the controller placed the server on (placement follows the create's 202)."""
    return until(f"{server_id} placed", lambda: admin.get(f"/servers/{server_id}").json()[
        "server"]["OS-EXT-SRV-ATTR:host"], 120, every=0.2)


def create(api: httpx.Client, count: int = 1, **extra: Any) -> list[str]:
    """`count` servers (no NIC) in one request; their ids."""
    body = {"server": {"name": "f3", "imageRef": IMAGE_ID, "flavorRef": "1", "min_count": count,
                       "return_reservation_id": True, **extra.pop("server", {})}, **extra}
    r = api.post("/servers", json=body)
    assert r.status_code == 202, r.text
    found = api.get(f"/servers?reservation_id={r.json()['reservation_id']}").json()["servers"]
    assert len(found) == count, found
    return [s["id"] for s in found]


def settle(fleet: Fleet, ids: list[str], user: str = "alice") -> list[dict[str, Any]]:
    return [fleet.controller.wait_status(i, {"ACTIVE", "ERROR"}, timeout=BUILD_S, user=user)
            for i in ids]


def assert_views_agree(fleet: Fleet, admin: httpx.Client, ids: list[str]) -> None:
    """Each server: the controller's status and power state equal its host agent's (read
    through the agent's own API), and it is the one running domain of its id on that host
    and on no other."""
    for server_id in ids:
        at_controller = admin.get(f"/servers/{server_id}").json()["server"]
        host = at_controller["OS-EXT-SRV-ATTR:host"]
        with httpx.Client(base_url=fleet.agents[host].url + "/v2.1", timeout=30,
                          headers={"X-Auth-Token": agent_token(at_controller)}) as local:
            at_agent = local.get(f"/servers/{server_id}").json()["server"]
        for key in ("status", "OS-EXT-STS:power_state", "OS-EXT-STS:vm_state"):
            assert at_controller.get(key) == at_agent.get(key), (key, at_controller, at_agent)
        for other in fleet.hosts:
            domains = agent_domains(fleet.agents[other].state_dir)
            if other == host:
                assert domains.get(server_id) == "running", (host, domains)
            else:
                assert server_id not in domains, (other, domains)


def agent_token(server: dict[str, Any]) -> str:
    return next(tok for tok, project in TOKENS.values() if project == server["tenant_id"])


def ours(fleet: Fleet, host: str) -> dict[str, str]:
    """This host's domains: the server ids placed there by the controller and their states."""
    return agent_domains(fleet.agents[host].state_dir)


@pytest.fixture
def nothing_left(fleet: Fleet) -> Iterator[None]:
    """After the test, pass or fail: every server deleted at the controller, then nothing
    of any on any host: no domain, no instance folder, no QEMU naming its state dir, no
    live server in its store. Domains are destroyed by hand too if the API could not."""
    yield
    try:
        for agent in fleet.agents.values():  # a test may have left one stopped
            if agent.proc is None or agent.proc.poll() is not None:
                agent.start(timeout=60)
        with admin_client(fleet) as admin:
            until("every host up", lambda: up_hosts(admin) == set(fleet.hosts), 120)
            ids = [s["id"] for s in admin.get("/servers?all_tenants=1").json()["servers"]]
            for server_id in ids:
                assert admin.delete(f"/servers/{server_id}").status_code == 204
            until("every server gone at the controller", lambda: all(
                admin.get(f"/servers/{i}").status_code == 404 for i in ids), BUILD_S, every=1)
            for host in fleet.hosts:
                state_dir = fleet.agents[host].state_dir
                until(f"{host}: no domain and no instance folder", lambda d=state_dir: (
                    not agent_domains(d) and not instance_dirs(d)), 120, every=1)
                assert not processes_naming(state_dir / "instances")
                assert not query_store(state_dir, "SELECT id FROM servers WHERE deleted_at IS NULL")
            assert admin.get("/os-hypervisors/statistics").json()[
                "hypervisor_statistics"]["running_vms"] == 0
    finally:
        for agent in fleet.agents.values():
            destroy_domains(agent.state_dir)


def test_placement_spreads_projects_honours_anti_affinity_and_disabled_hosts(
        fleet: Fleet, nothing_left: None):
    ctl = fleet.controller
    with admin_client(fleet) as admin, ctl.client("alice") as alice, ctl.client("bob") as bob:
        ids = create(alice, 6)
        servers = settle(fleet, ids)
        assert {s["status"] for s in servers} == {"ACTIVE"}, [s["status"] for s in servers]
        placed = {i: host_of(admin, i) for i in ids}
        assert sorted(list(placed.values()).count(h) for h in fleet.hosts) == [2, 2, 2], placed
        host_ids = {s["id"]: s["hostId"] for s in servers}
        assert len(set(host_ids.values())) == 3
        for host in fleet.hosts:  # one hostId per host, a running domain where it says
            on_host = [i for i, h in placed.items() if h == host]
            assert len({host_ids[i] for i in on_host}) == 1
            assert sorted(i for i, state in ours(fleet, host).items()
                          if state == "running") == sorted(on_host)
        assert_views_agree(fleet, admin, ids)

        # Another project on a host alice uses: another hostId.
        (bobs,) = create(bob, 1)
        (bob_server,) = settle(fleet, [bobs], user="bob")
        assert bob_server["status"] == "ACTIVE"
        bob_host = host_of(admin, bobs)
        alice_there = next(i for i, h in placed.items() if h == bob_host)
        assert bob_server["hostId"] and bob_server["hostId"] != host_ids[alice_there]
        for server_id in [*ids, bobs]:
            assert admin.delete(f"/servers/{server_id}").status_code == 204
        until("the first seven gone", lambda: all(
            admin.get(f"/servers/{i}").status_code == 404 for i in [*ids, bobs]), BUILD_S, 1)

        # Anti-affinity: four members, three hosts: three ACTIVE apart, the fourth ERROR.
        r = alice.post("/os-server-groups", json={"server_group": {
            "name": "apart", "policies": ["anti-affinity"]}})
        assert r.status_code == 200, r.text
        group = r.json()["server_group"]["id"]
        members = [create(alice, 1, **{"os:scheduler_hints": {"group": group}})[0]
                   for _ in range(4)]
        settled = settle(fleet, members)
        assert [s["status"] for s in settled] == ["ACTIVE"] * 3 + ["ERROR"], settled
        assert settled[3]["fault"]["message"].startswith("No valid host was found."), settled[3]
        assert sorted(host_of(admin, i) for i in members[:3]) == sorted(fleet.hosts)
        assert not any(members[3] in ours(fleet, h) for h in fleet.hosts)
        for server_id in members:
            assert admin.delete(f"/servers/{server_id}").status_code == 204
        for server_id in members:
            ctl.wait_status(server_id, {"DELETED"}, timeout=BUILD_S)

        # A disabled host gets no new server; enabled, it is in play again.
        off = fleet.hosts[0]
        r = admin.put("/os-services/disable", json={"host": off, "binary": "nova-compute"})
        assert r.status_code == 200, r.text
        assert service(admin, off)["status"] == "disabled"
        elsewhere = create(alice, 2)
        assert off not in {host_of(admin, i) for i in elsewhere}
        assert admin.put("/os-services/enable", json={
            "host": off, "binary": "nova-compute"}).status_code == 200
        (back,) = create(alice, 1)  # alice has none there: the project's spread picks it
        assert host_of(admin, back) == off  # (placement is all this checks: not built out)


class Recorded:
    """A keystoneauth session with a fixed endpoint and token (no Keystone), every request
    URL recorded so the test shows everything went to the controller."""

    def __init__(self, fleet: Fleet, token: str) -> None:
        self.base = fleet.controller.url + "/"
        self.endpoint = fleet.controller.url + "/v2.1"
        self.urls: list[str] = []
        http = requests.Session()
        http.hooks["response"].append(lambda r, *a, **kw: self.urls.append(r.request.url))
        self.session = ks_session.Session(auth=token_endpoint.Token(self.endpoint, token),
                                          session=http, timeout=30)

    def assert_only_controller(self) -> None:
        assert self.urls and all(u.startswith(self.base) for u in self.urls), self.urls


def test_openstacksdk_and_novaclient_drive_the_controller_unchanged(
        fleet: Fleet, nothing_left: None):
    user, admin = Recorded(fleet, TOKENS["alice"][0]), Recorded(fleet, ADMIN_TOKEN)
    sdk = connection.Connection(session=user.session, compute_endpoint_override=user.endpoint,
                                compute_api_version="2.1")
    sdk_admin = connection.Connection(session=admin.session,
                                      compute_endpoint_override=admin.endpoint,
                                      compute_api_version="2.1")
    nova = nova_client.Client("2.1", session=user.session, endpoint_override=user.endpoint,
                              timeout=30)

    # `openstack compute service list` / `hypervisor list`, through the SDK.
    services = list(sdk_admin.compute.services())
    assert sorted(s.host for s in services) == sorted(fleet.hosts)
    assert {(s.binary, s.status, s.state) for s in services} == {("nova-compute", "enabled", "up")}
    hypervisors = list(sdk_admin.compute.hypervisors(details=True))
    assert sorted(h.name for h in hypervisors) == sorted(fleet.hosts)
    assert all(h.state == "up" and h.status == "enabled" for h in hypervisors)

    by_sdk = sdk.compute.create_server(name="sdk-f3", image_id=IMAGE_ID, flavor_id="1")
    by_nova = nova.servers.create("nova-f3", IMAGE_ID, "1")
    by_sdk = sdk.compute.wait_for_server(by_sdk, status="ACTIVE", wait=BUILD_S, interval=2)
    until("novaclient's server ACTIVE", lambda: nova.servers.get(by_nova.id).status == "ACTIVE",
          BUILD_S, every=2)
    assert {s.id for s in sdk.compute.servers()} == {by_sdk.id, by_nova.id}
    assert {s.id for s in nova.servers.list()} == {by_sdk.id, by_nova.id}
    shown = sdk.compute.get_server(by_nova.id)
    assert shown.name == "nova-f3" and shown.host_id
    assert nova.servers.get(by_sdk.id).name == "sdk-f3"
    with admin_client(fleet) as http_admin:
        assert_views_agree(fleet, http_admin, [by_sdk.id, by_nova.id])

    sdk.compute.delete_server(by_nova.id)
    nova.servers.delete(by_sdk.id)
    sdk.compute.wait_for_delete(by_sdk, wait=BUILD_S, interval=2)
    until("both gone", lambda: not nova.servers.list(), BUILD_S, every=2)
    user.assert_only_controller()
    admin.assert_only_controller()


def test_an_agent_killed_mid_build_is_down_gets_nothing_and_finishes_its_builds_once(
        fleet: Fleet, nothing_left: None):
    ctl = fleet.controller
    with admin_client(fleet) as admin, ctl.client("alice") as alice:
        ids = create(alice, 3)
        placed = {i: host_of(admin, i) for i in ids}
        assert sorted(placed.values()) == sorted(fleet.hosts), placed
        victim = fleet.hosts[1]
        victims = [i for i, h in placed.items() if h == victim]
        agent = fleet.agents[victim]
        # Mid-build: its agent has taken the job (the server is in its own store, BUILD).
        with agent.client("alice") as local:
            until("the job taken by its agent", lambda: local.get(
                f"/servers/{victims[0]}").status_code == 200, 120, every=0.2)
        agent.kill()
        killed = time.monotonic()
        until(f"{victim} down", lambda: service(admin, victim)["state"] == "down", DOWN_S,
              every=0.5)
        print(f"agent marked down {time.monotonic() - killed:.1f} s after SIGKILL")
        assert ctl.wait_status(victims[0], {"BUILD", "ACTIVE", "ERROR"})["status"] == "BUILD"

        more = create(alice, 2)  # while it is down: placed only on the others
        assert victim not in {host_of(admin, i) for i in more}

        agent.start(timeout=60)
        until(f"{victim} up again", lambda: victim in up_hosts(admin), 120)
        everything = [*ids, *more]
        assert {s["status"] for s in settle(fleet, everything)} == {"ACTIVE"}
        assert_views_agree(fleet, admin, everything)
        assert sorted(ours(fleet, victim)) == sorted(victims)  # one domain each, no more


async def test_the_broker_killed_during_six_builds_loses_nothing_and_hosts_come_back(
        fleet: Fleet, fleet_vhost: str, nothing_left: None):
    ctl = fleet.controller
    for host in fleet.hosts:  # a job queue that lived a while survives a crash: as real ones
        await asyncio.to_thread(broker.wait_until_queue_survives_a_crash, fleet_vhost,
                                f"compute.{host}")
    with admin_client(fleet) as admin, ctl.client("alice") as alice:
        ids = create(alice, 6)
        async with broker.killed_broker():
            await asyncio.sleep(3)  # builds and their events go on without the broker
        back = time.monotonic()
        await asyncio.to_thread(until, "every host up after the broker is back",
                                lambda: up_hosts(admin) == set(fleet.hosts), 30, 0.2)
        print(f"every host up {time.monotonic() - back:.1f} s after the broker was back")
        servers = await asyncio.to_thread(settle, fleet, ids)
        assert {s["status"] for s in servers} == {"ACTIVE"}, [s["status"] for s in servers]
        await asyncio.to_thread(assert_views_agree, fleet, admin, ids)
        placed = [host_of(admin, i) for i in ids]
        assert sorted(placed.count(h) for h in fleet.hosts) == [2, 2, 2], placed
        for host in fleet.hosts:
            assert sorted(ours(fleet, host)) == sorted(
                i for i, h in zip(ids, placed, strict=True) if h == host)
