"""/os-services and /os-hypervisors as Nova 2.1 answers them, over the controller's hosts:
every field of Nova's views, up/down from the heartbeats' age, use from the controller's
servers on each host; disable/enable with a reason (and the disabled host is then left
out by the placer); admin only (403 as Nova's policy words it); a single agent (no host
registry) has no such routes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.api import models_fleet
from agent.api.app import create_api
from agent.core.flavors import FlavorCatalog
from agent.core.host_admin import HostAdmin, host_number
from agent.core.placement import Placer
from agent.model.fleet import Heartbeat
from agent.model.host import VirtType
from tests.unit.api.conftest import ADMIN, ALICE, Env, build_env, client_for, fault
from tests.unit.fakes.hosts import MemoryHostRegistry

NOW = datetime(2026, 12, 1, 12, 0, 0, 500000, tzinfo=UTC)


def beat(name: str, **kw: Any) -> Heartbeat:
    fields: dict[str, Any] = {"host": name, "vcpus": 4, "ram_mb": 8192, "disk_total_gb": 100,
                              "disk_used_gb": 3, "running_servers": 0, "virt_type": VirtType.QEMU,
                              "images": [], "sent_at": NOW, "interval_s": 10.0}
    fields.update(kw)
    return Heartbeat(**fields)


@pytest.fixture
async def fleet() -> AsyncIterator[Env]:
    deps, store, images, kicked = build_env()
    registry = MemoryHostRegistry()
    await registry.record_heartbeat(beat("hv1"), NOW)
    await registry.record_heartbeat(beat("hv2"), NOW - timedelta(seconds=31))  # down
    deps.hosts = HostAdmin(registry, store, deps.flavors, now=lambda: NOW)
    app = create_api(deps)
    async with client_for(app) as client:
        env = Env(client=client, app=app, deps=deps, store=store, images=images,
                  cirros=images.get("cirros"), big=images.get("big"), kicked=kicked)
        env.registry = registry  # type: ignore[attr-defined]
        yield env


async def test_services_list_every_host_as_novas_2_1_view(fleet: Env):
    r = await fleet.client.get("/v2.1/os-services", headers=ADMIN)
    assert r.status_code == 200, r.text
    models_fleet.ServiceIndex.model_validate(r.json())
    assert r.json() == {"services": [
        {"id": host_number("hv1"), "binary": "nova-compute", "host": "hv1", "zone": "nova",
         "status": "enabled", "state": "up", "updated_at": "2026-12-01T12:00:00.500000",
         "disabled_reason": None},
        {"id": host_number("hv2"), "binary": "nova-compute", "host": "hv2", "zone": "nova",
         "status": "enabled", "state": "down", "updated_at": "2026-12-01T11:59:29.500000",
         "disabled_reason": None}]}
    only = await fleet.client.get("/v2.1/os-services?host=hv2&binary=nova-compute", headers=ADMIN)
    assert [s["host"] for s in only.json()["services"]] == ["hv2"]
    none = await fleet.client.get("/v2.1/os-services?binary=nova-scheduler", headers=ADMIN)
    assert none.json() == {"services": []}


async def test_disable_with_a_reason_then_enable_as_nova_2_1_answers(fleet: Env):
    put = fleet.client.put
    r = await put("/v2.1/os-services/disable-log-reason", headers=ADMIN, json={
        "host": "hv1", "binary": "nova-compute", "disabled_reason": "disk swap"})
    assert r.status_code == 200, r.text
    assert r.json() == {"service": {"host": "hv1", "binary": "nova-compute", "status": "disabled",
                                    "disabled_reason": "disk swap"}}
    listed = (await fleet.client.get("/v2.1/os-services?host=hv1", headers=ADMIN)).json()
    assert (listed["services"][0]["status"], listed["services"][0]["disabled_reason"]) == (
        "disabled", "disk swap")
    r = await put("/v2.1/os-services/enable", headers=ADMIN,
                  json={"host": "hv1", "binary": "nova-compute"})
    assert r.json() == {"service": {"host": "hv1", "binary": "nova-compute", "status": "enabled"}}
    assert fleet.registry.get_host("hv1").disabled_reason is None  # type: ignore[attr-defined]
    r = await put("/v2.1/os-services/disable", headers=ADMIN,
                  json={"host": "hv1", "binary": "nova-compute"})
    assert r.json() == {"service": {"host": "hv1", "binary": "nova-compute", "status": "disabled"}}


async def test_a_disabled_host_gets_no_new_server(fleet: Env):
    registry = fleet.registry  # type: ignore[attr-defined]
    await registry.record_heartbeat(beat("hv2", images=[str(fleet.cirros.uuid)]), NOW)
    await registry.record_heartbeat(beat("hv1", images=[str(fleet.cirros.uuid)]), NOW)
    placer = Placer(registry, fleet.store, FlavorCatalog(), now=lambda: NOW)
    await fleet.client.put("/v2.1/os-services/disable", headers=ADMIN,
                           json={"host": "hv1", "binary": "nova-compute"})
    for _ in range(3):
        server = fleet.server((await fleet.create())["id"])
        host = placer.place(server, FlavorCatalog().get(server.flavor_id))
        await fleet.store.update_server(server.id, {"host": host}, cause="placed")
        assert host == "hv2"


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("enable", {"host": "hv9", "binary": "nova-compute"}, 404,
     "Could not find binary nova-compute on host hv9."),
    ("enable", {"host": "hv1", "binary": "nova-scheduler"}, 400,
     "Updating a nova-scheduler service is not supported. Only nova-compute services can be "
     "updated."),
    ("disable-log-reason", {"host": "hv1", "binary": "nova-compute"}, 400,
     "Missing disabled reason field"),
    ("force-down", {"host": "hv1", "binary": "nova-compute"}, 404, "Unknown action"),
    ("disable", {"host": "hv1"}, 400, "'binary' is a required property"),
    ("disable", {"host": "hv1", "binary": "nova-compute", "forced_down": True}, 400,
     "'forced_down' was unexpected"),  # 2.11's
    ("disable-log-reason", {"host": "hv1", "binary": "nova-compute", "disabled_reason": ""}, 400,
     "disabled_reason"),
])
async def test_bad_service_updates_answer_as_nova_and_change_nothing(fleet: Env, path, body,
                                                                     status, message):
    r = await fleet.client.put(f"/v2.1/os-services/{path}", headers=ADMIN, json=body)
    name = {400: "badRequest", 404: "itemNotFound"}[status]
    assert message in fault(r, status, name)
    assert fleet.registry.get_host("hv1").enabled  # type: ignore[attr-defined]


async def test_hypervisors_list_detail_and_show_have_novas_2_1_fields(fleet: Env):
    for _ in range(2):  # two servers of flavor 1 (1 vCPU, 256 MiB, 1 GiB) placed on hv1
        sid = (await fleet.create())["id"]
        await fleet.store.update_server(fleet.server(sid).id, {"host": "hv1"}, cause="placed")
    listed = await fleet.client.get("/v2.1/os-hypervisors", headers=ADMIN)
    models_fleet.HypervisorIndex.model_validate(listed.json())
    assert listed.json() == {"hypervisors": [
        {"id": host_number("hv1"), "hypervisor_hostname": "hv1", "state": "up", "status": "enabled"},
        {"id": host_number("hv2"), "hypervisor_hostname": "hv2", "state": "down",
         "status": "enabled"}]}
    detail = await fleet.client.get("/v2.1/os-hypervisors/detail", headers=ADMIN)
    models_fleet.HypervisorDetailIndex.model_validate(detail.json())
    hv1 = detail.json()["hypervisors"][0]
    assert hv1 == {
        "id": host_number("hv1"), "hypervisor_hostname": "hv1", "state": "up", "status": "enabled",
        "vcpus": 4, "memory_mb": 8192, "local_gb": 100, "vcpus_used": 2, "memory_mb_used": 512,
        "local_gb_used": 3, "free_ram_mb": 7680, "free_disk_gb": 97, "current_workload": 2,
        "running_vms": 2, "disk_available_least": 97, "hypervisor_type": "QEMU",
        "hypervisor_version": 0, "cpu_info": "{}", "host_ip": "",
        "service": {"id": host_number("hv1"), "host": "hv1", "disabled_reason": None}}
    shown = await fleet.client.get(f"/v2.1/os-hypervisors/{host_number('hv1')}", headers=ADMIN)
    assert shown.json() == {"hypervisor": hv1}
    for bad in ("1", "hv1"):
        assert fault(await fleet.client.get(f"/v2.1/os-hypervisors/{bad}", headers=ADMIN), 404,
                     "itemNotFound") == f"Hypervisor with ID '{bad}' could not be found."


async def test_statistics_sum_the_enabled_hypervisors(fleet: Env):
    sid = (await fleet.create())["id"]
    await fleet.store.update_server(fleet.server(sid).id, {"host": "hv2"}, cause="placed")
    r = await fleet.client.get("/v2.1/os-hypervisors/statistics", headers=ADMIN)
    models_fleet.HypervisorStatisticsShow.model_validate(r.json())
    assert r.json() == {"hypervisor_statistics": {
        "count": 2, "vcpus": 8, "memory_mb": 16384, "local_gb": 200, "vcpus_used": 1,
        "memory_mb_used": 256, "local_gb_used": 6, "free_ram_mb": 16128, "free_disk_gb": 194,
        "current_workload": 1, "running_vms": 1, "disk_available_least": 194}}
    await fleet.client.put("/v2.1/os-services/disable", headers=ADMIN,
                           json={"host": "hv2", "binary": "nova-compute"})
    stats = (await fleet.client.get("/v2.1/os-hypervisors/statistics", headers=ADMIN)).json()
    assert (stats["hypervisor_statistics"]["count"], stats["hypervisor_statistics"]["vcpus"],
            stats["hypervisor_statistics"]["running_vms"]) == (1, 4, 0)


@pytest.mark.parametrize(("method", "path", "rule"), [
    ("GET", "/v2.1/os-services", "os-services:list"),
    ("PUT", "/v2.1/os-services/disable", "os-services:update"),
    ("GET", "/v2.1/os-hypervisors", "os-hypervisors:list"),
    ("GET", "/v2.1/os-hypervisors/detail", "os-hypervisors:list-detail"),
    ("GET", "/v2.1/os-hypervisors/statistics", "os-hypervisors:statistics"),
    ("GET", f"/v2.1/os-hypervisors/{host_number('hv1')}", "os-hypervisors:show"),
])
async def test_only_an_admin_may_as_novas_policy_says(fleet: Env, method, path, rule):
    body = {"host": "hv1", "binary": "nova-compute"} if method == "PUT" else None
    r = await fleet.client.request(method, path, headers=ALICE, json=body)
    assert fault(r, 403, "forbidden") == (f"Policy doesn't allow os_compute_api:{rule} to be "
                                          "performed.")
    assert fleet.registry.get_host("hv1").enabled  # type: ignore[attr-defined]


async def test_a_single_agent_has_no_host_admin_routes(env: Env):
    for path in ("/v2.1/os-services", "/v2.1/os-hypervisors", "/v2.1/os-hypervisors/statistics"):
        assert fault(await env.client.get(path, headers=ADMIN), 404,
                     "itemNotFound") == "The resource could not be found."
    doc = (await env.client.get("/openapi.json")).json()
    assert not [p for p in doc["paths"] if re.search("os-(services|hypervisors)", p)]


async def test_the_controllers_document_has_the_routes_with_and_without_project_id(fleet: Env):
    paths = (await fleet.client.get("/openapi.json")).json()["paths"]
    fleet_paths = {p: ops for p, ops in paths.items() if re.search("os-(services|hypervisors)", p)}
    assert len(fleet_paths) == 2 * 8
    assert {"/v2.1/os-services", "/v2.1/{project_id}/os-services/{action}",
            "/v2.1/os-hypervisors/statistics", "/v2.1/{project_id}/os-hypervisors/{hypervisor_id}",
            } <= set(fleet_paths)
    for path, ops in fleet_paths.items():
        for op in ops.values():
            assert op["security"] == [{"KeystoneToken": []}], path
            assert {"400", "401", "403", "404", "default"} <= set(op["responses"]), path
            assert "422" not in op["responses"], path


async def test_search_and_servers_match_host_names_as_nova_does(fleet: Env):
    sid = (await fleet.create(name="web"))["id"]
    await fleet.store.update_server(fleet.server(sid).id, {"host": "hv2"}, cause="placed")
    found = await fleet.client.get("/v2.1/os-hypervisors/hv/search", headers=ADMIN)
    models_fleet.HypervisorIndex.model_validate(found.json())
    assert [h["hypervisor_hostname"] for h in found.json()["hypervisors"]] == ["hv1", "hv2"]
    servers = await fleet.client.get("/v2.1/os-hypervisors/hv/servers", headers=ADMIN)
    models_fleet.HypervisorServersIndex.model_validate(servers.json())
    assert [h.get("servers") for h in servers.json()["hypervisors"]] == [
        None, [{"name": "web", "uuid": sid}]]
    for what in ("search", "servers"):
        assert fault(await fleet.client.get(f"/v2.1/os-hypervisors/xyz/{what}", headers=ADMIN),
                     404, "itemNotFound") == "No hypervisor matching 'xyz' could be found."
        assert "os-hypervisors:" + what in fault(await fleet.client.get(
            f"/v2.1/os-hypervisors/hv/{what}", headers=ALICE), 403, "forbidden")
