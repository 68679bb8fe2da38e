"""python-novaclient and openstacksdk, unchanged, against the controller's API over real
HTTP (the API app served by uvicorn on 127.0.0.1, with an in-memory store and host
registry): server groups, the services list with disable/enable, hypervisors (list,
detail, show, search, servers, statistics) are read and written as Nova's clients expect."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc
from openstack import connection

from agent.api.app import create_api
from agent.core.host_admin import HostAdmin
from agent.model.fleet import Heartbeat
from agent.model.host import VirtType
from tests.unit.api.conftest import ADMIN, ALICE, build_env
from tests.unit.fakes.hosts import MemoryHostRegistry

pytestmark = [
    pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'service_type' parameter is unnecesary"),
    # openstacksdk flags the hypervisor's capacity fields (removed from Nova's view at 2.88)
    pytest.mark.filterwarnings("ignore:The field '.*' has been deprecated"),
]


def beat(name: str) -> Heartbeat:
    return Heartbeat(host=name, vcpus=4, ram_mb=8192, disk_total_gb=100, disk_used_gb=2,
                     running_servers=0, virt_type=VirtType.QEMU, images=[],
                     sent_at=datetime.now(UTC), interval_s=10.0)


class Served:
    def __init__(self, url: str, registry: MemoryHostRegistry) -> None:
        self.url = url
        self.registry = registry

    def session(self, token: str) -> ks_session.Session:
        return ks_session.Session(auth=token_endpoint.Token(self.url + "/v2.1", token), timeout=30)

    def nova(self, headers: dict[str, str] = ADMIN) -> Any:
        token = headers["X-Auth-Token"]
        return nova_client.Client("2.1", session=self.session(token),
                                  endpoint_override=self.url + "/v2.1", timeout=30)

    def sdk(self, headers: dict[str, str] = ADMIN) -> connection.Connection:
        token = headers["X-Auth-Token"]
        return connection.Connection(session=self.session(token),
                                     compute_endpoint_override=self.url + "/v2.1",
                                     compute_api_version="2.1")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    deps, store, _images, _ = build_env()
    registry = MemoryHostRegistry()
    for name in ("hv1", "hv2"):
        asyncio.run(registry.record_heartbeat(beat(name), datetime.now(UTC)))
    deps.hosts = HostAdmin(registry, store, deps.flavors)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_api(deps), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", registry)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_novaclient_lists_disables_and_enables_services(served: Served):
    nova = served.nova()
    services = nova.services.list()
    assert [(s.host, s.binary, s.status, s.state, s.zone) for s in services] == [
        ("hv1", "nova-compute", "enabled", "up", "nova"), ("hv2", "nova-compute", "enabled", "up", "nova")]
    disabled = nova.services.disable_log_reason("hv1", "nova-compute", "new disks")
    assert (disabled.status, disabled.disabled_reason) == ("disabled", "new disks")
    assert served.registry.get_host("hv1").enabled is False
    assert nova.services.list(host="hv1")[0].disabled_reason == "new disks"
    assert nova.services.enable("hv1", "nova-compute").status == "enabled"
    assert served.registry.get_host("hv1").enabled is True
    with pytest.raises(nova_exc.NotFound):
        nova.services.disable("hv9", "nova-compute")
    with pytest.raises(nova_exc.Forbidden):
        served.nova(ALICE).services.list()


def test_novaclient_reads_hypervisors_and_their_statistics(served: Served):
    nova = served.nova()
    hypervisors = nova.hypervisors.list()  # /detail
    assert [(h.hypervisor_hostname, h.vcpus, h.memory_mb, h.hypervisor_type, h.state)
            for h in hypervisors] == [("hv1", 4, 8192, "QEMU", "up"), ("hv2", 4, 8192, "QEMU", "up")]
    assert nova.hypervisors.get(hypervisors[1].id).hypervisor_hostname == "hv2"
    assert [h.hypervisor_hostname for h in nova.hypervisors.search("hv2")] == ["hv2"]
    assert [h.hypervisor_hostname for h in nova.hypervisors.search("hv", servers=True)] == ["hv1", "hv2"]
    stats = nova.hypervisor_stats.statistics()
    assert (stats.count, stats.vcpus, stats.memory_mb, stats.local_gb) == (2, 8, 16384, 200)


def test_novaclient_makes_lists_and_deletes_server_groups(served: Served):
    nova = served.nova(ALICE)
    group = nova.server_groups.create(name="web", policies=["anti-affinity"])
    assert (group.name, group.policies, group.members) == ("web", ["anti-affinity"], [])
    assert [g.id for g in nova.server_groups.list()] == [group.id]
    assert nova.server_groups.get(group.id).name == "web"
    nova.server_groups.delete(group.id)
    with pytest.raises(nova_exc.NotFound):
        nova.server_groups.get(group.id)


def test_openstacksdk_reads_services_hypervisors_and_makes_server_groups(served: Served):
    admin = served.sdk()
    assert sorted(s.host for s in admin.compute.services()) == ["hv1", "hv2"]
    details = list(admin.compute.hypervisors(details=True))
    assert [(h.name, h.vcpus, h.status, h.state) for h in details] == [
        ("hv1", 4, "enabled", "up"), ("hv2", 4, "enabled", "up")]
    assert admin.compute.get_hypervisor(details[0].id).name == "hv1"
    alice = served.sdk(ALICE)
    group = alice.compute.create_server_group(name="db", policies=["soft-anti-affinity"])
    assert (group.name, group.policies) == ("db", ["soft-anti-affinity"])
    assert [g.name for g in alice.compute.server_groups()] == ["db"]
    alice.compute.delete_server_group(group)
    assert list(alice.compute.server_groups()) == []
