"""Servers with networks through the HTTP API, and the Neutron-shaped /v2.0: statuses and
messages of every refusal, `addresses` in the server view, the port registry."""

from __future__ import annotations

import httpx
import pytest

from agent.api import models, models_catalog, models_network
from tests.unit.api.conftest import ADMIN, ALICE, BOB, LIMITS, TEST_NET, Env, fault

NET = str(TEST_NET.id)


async def make_port(env: Env, headers=ALICE, **port) -> dict:
    r = await env.client.post("/v2.0/ports", headers=headers,
                              json={"port": {"network_id": NET, **port}})
    assert r.status_code == 201, r.text
    models_network.PortShow.model_validate(r.json())
    return r.json()["port"]


async def create(env: Env, networks, headers=ALICE) -> httpx.Response:
    return await env.client.post("/v2.1/servers", headers=headers, json={"server": {
        "name": "vm", "imageRef": str(env.cirros.uuid), "flavorRef": "1", "networks": networks}})


async def test_a_server_shows_its_fixed_ips_by_network_in_nic_order(env: Env):
    port = await make_port(env, name="mine")
    r = await create(env, [{"uuid": NET, "fixed_ip": "10.213.0.50"}, {"port": port["id"]}])
    assert r.status_code == 202, r.text
    sid = r.json()["server"]["id"]
    shown = (await env.client.get(f"/v2.1/servers/{sid}", headers=ALICE)).json()["server"]
    assert shown["addresses"] == {"private": [
        {"version": 4, "addr": "10.213.0.50", "OS-EXT-IPS:type": "fixed",
         "OS-EXT-IPS-MAC:mac_addr": shown["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"]},
        {"version": 4, "addr": port["fixed_ips"][0]["ip_address"], "OS-EXT-IPS:type": "fixed",
         "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]}]}
    assert shown["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e:")
    listed = (await env.client.get("/v2.1/servers/detail", headers=ALICE)).json()["servers"]
    assert listed[0]["addresses"] == shown["addresses"]
    bound = (await env.client.get(f"/v2.0/ports/{port['id']}", headers=ALICE)).json()["port"]
    assert (bound["device_id"], bound["device_owner"]) == (sid, "compute:nova")
    ours = (await env.client.get(f"/v2.0/ports?device_id={sid}", headers=ALICE)).json()["ports"]
    assert [p["fixed_ips"][0]["ip_address"] for p in ours] == [
        "10.213.0.50", port["fixed_ips"][0]["ip_address"]]


@pytest.mark.parametrize(("networks", "status", "text"), [
    ([{"uuid": "6e7f4a6c-6b2a-4d1e-9d8e-2b9d3c4f5a61"}], 400, "could not be found"),
    ([{"uuid": "not-a-uuid"}], 400, "not in proper format"),
    ([{"port": "6e7f4a6c-6b2a-4d1e-9d8e-2b9d3c4f5a61"}], 400, "could not be found"),
    ([{"uuid": NET, "fixed_ip": "10.213.5.5"}], 400, "not in the network's subnet"),
    ([{"uuid": NET, "fixed_ip": "10.213.0.1"}], 400, "gateway address"),
    ([{"uuid": NET, "fixed_ip": "10.213.0.0"}], 400, "network address"),
    ([{"uuid": NET, "fixed_ip": "10.213.0.255"}], 400, "broadcast address"),
    ([{"uuid": NET, "fixed_ip": "300.1.1.1"}], 400, "not an IP address"),
    ([{}], 400, "needs a 'uuid' or a 'port'"),
    ([{"uuid": NET}] * 17, 400, "At most 16"),
])
async def test_bad_networks_are_refused_naming_networks(env: Env, networks, status, text):
    r = await create(env, networks)
    message = fault(r, status, "badRequest")
    assert text in message and "networks" in message
    assert env.store.list_servers() == [] and env.store.list_ports() == []


async def test_a_fixed_ip_in_use_is_a_bad_request_and_a_port_in_use_a_conflict_as_in_nova(env: Env):
    """Nova answers FixedIpAlreadyInUse with 400 and PortInUse with 409."""
    assert (await create(env, [{"uuid": NET, "fixed_ip": "10.213.0.7"}])).status_code == 202
    message = fault(await create(env, [{"uuid": NET, "fixed_ip": "10.213.0.7"}]), 400, "badRequest")
    assert "Fixed IP address 10.213.0.7 is already in use on instance " in message
    assert "networks" in message
    port = await make_port(env)
    assert (await create(env, [{"port": port["id"]}])).status_code == 202
    assert "still in use" in fault(await create(env, [{"port": port["id"]}]), 409, "conflictingRequest")
    assert len(env.store.list_servers()) == 2


async def test_another_projects_port_is_not_found_for_a_server_nor_through_v2_0(env: Env):
    bobs = await make_port(env, BOB)
    assert "could not be found" in fault(await create(env, [{"port": bobs["id"]}]), 400, "badRequest")
    fault(await env.client.get(f"/v2.0/ports/{bobs['id']}", headers=ALICE), 404, "itemNotFound")
    fault(await env.client.delete(f"/v2.0/ports/{bobs['id']}", headers=ALICE), 404, "itemNotFound")
    assert (await env.client.get("/v2.0/ports", headers=ALICE)).json()["ports"] == []


async def test_none_auto_and_empty_give_no_nic_without_a_default_network(env: Env):
    for networks in ("none", "auto", []):
        r = await create(env, networks)
        assert r.status_code == 202, r.text
        shown = (await env.client.get(f"/v2.1/servers/{r.json()['server']['id']}", headers=ALICE))
        assert shown.json()["server"]["addresses"] == {}


async def test_networks_and_subnets_are_listed_and_shown_as_neutron_does(env: Env):
    c = env.client
    listed = (await c.get("/v2.0/networks", headers=BOB)).json()
    models_network.NetworkIndex.model_validate(listed)
    [net] = listed["networks"]
    assert (net["id"], net["name"], net["mtu"], net["shared"], net["subnets"]) == (
        NET, "private", 1500, True, [str(TEST_NET.subnet_id)])
    assert (await c.get("/v2.0/networks?name=private", headers=ALICE)).json()["networks"] == [net]
    assert (await c.get("/v2.0/networks?name=other", headers=ALICE)).json()["networks"] == []
    assert (await c.get(f"/v2.0/networks/{NET}", headers=ALICE)).json() == {"network": net}
    fault(await c.get("/v2.0/networks/nope", headers=ALICE), 404, "itemNotFound")
    subnet = (await c.get(f"/v2.0/subnets/{TEST_NET.subnet_id}", headers=ALICE)).json()
    models_network.SubnetShow.model_validate(subnet)
    assert (subnet["subnet"]["cidr"], subnet["subnet"]["gateway_ip"],
            subnet["subnet"]["allocation_pools"]) == (
        "10.213.0.0/24", "10.213.0.1", [{"start": "10.213.0.2", "end": "10.213.0.254"}])
    models_network.SubnetIndex.model_validate((await c.get("/v2.0/subnets", headers=ALICE)).json())
    fault(await c.get("/v2.0/subnets/nope", headers=ALICE), 404, "itemNotFound")
    assert (await c.get("/v2.0/networks")).status_code == 401


async def test_ports_are_created_with_a_given_or_free_address_and_mac_and_deleted(env: Env):
    auto = await make_port(env)
    given = await make_port(env, fixed_ips=[{"ip_address": "10.213.0.99"}], mac_address="FA:16:3E:12:34:56")
    assert auto["fixed_ips"] == [{"subnet_id": str(TEST_NET.subnet_id), "ip_address": "10.213.0.2"}]
    assert (given["fixed_ips"][0]["ip_address"], given["mac_address"]) == ("10.213.0.99", "fa:16:3e:12:34:56")
    assert (auto["status"], auto["device_id"], auto["tenant_id"]) == ("DOWN", "", "p-alice")
    index = (await env.client.get("/v2.0/ports", headers=ALICE)).json()
    models_network.PortIndex.model_validate(index)
    assert {p["id"] for p in index["ports"]} == {auto["id"], given["id"]}
    found = await env.client.get("/v2.0/ports?mac_address=FA:16:3E:12:34:56", headers=ALICE)
    assert [p["id"] for p in found.json()["ports"]] == [given["id"]]
    r = await env.client.post("/v2.0/ports", headers=ALICE, json={"port": {
        "network_id": NET, "fixed_ips": [{"ip_address": "10.213.0.99"}]}})
    fault(r, 409, "conflictingRequest")
    r = await env.client.post("/v2.0/ports", headers=ALICE, json={"port": {
        "network_id": NET, "mac_address": "fa:16:3e:12:34:56"}})
    assert "mac address" in fault(r, 409, "conflictingRequest")
    for bad in ({"fixed_ips": [{"ip_address": "10.213.0.1"}]}, {"mac_address": "01:00:5e:00:00:01"},
                {"fixed_ips": [{"subnet_id": "x", "ip_address": "10.213.0.5"}]}):
        fault(await env.client.post("/v2.0/ports", headers=ALICE, json={"port": {
            "network_id": NET, **bad}}), 400, "badRequest")
    fault(await env.client.post("/v2.0/ports", headers=ALICE, json={"port": {
        "network_id": "6e7f4a6c-6b2a-4d1e-9d8e-2b9d3c4f5a61"}}), 404, "itemNotFound")
    fault(await env.client.post("/v2.0/ports", headers=ALICE, json={"port": {
        "network_id": NET, "project_id": "p-bob"}}), 403, "forbidden")
    assert (await env.client.delete(f"/v2.0/ports/{auto['id']}", headers=ALICE)).status_code == 204
    fault(await env.client.get(f"/v2.0/ports/{auto['id']}", headers=ALICE), 404, "itemNotFound")


@pytest.mark.parametrize(("mac", "reason"), [
    ("fe:16:3e:00:00:01", "host side of this host's taps"),  # a tap's own MAC
    ("00:00:5e:00:01:07", "VRRP"),  # a redundant gateway's
    ("ff:ff:ff:ff:ff:ff", "not a valid unicast"),
    ("33:33:00:00:00:01", "not a valid unicast"),  # IPv6 multicast
    ("00:00:00:00:00:00", "not a valid unicast"),
])
async def test_multicast_and_reserved_macs_are_refused_naming_mac_address(env: Env, mac, reason):
    r = await env.client.post("/v2.0/ports", headers=ALICE, json={"port": {
        "network_id": NET, "mac_address": mac}})
    message = fault(r, 400, "badRequest")
    assert reason in message and "mac_address" in message
    assert env.store.list_ports() == []


async def test_the_port_quota_is_per_project_and_counts_a_servers_new_ports(env: Env):
    """One project cannot take a shared network's addresses: its ports (its own and those
    made for its servers) stop at max_total_ports, 403 for a server as Nova answers
    Neutron's refusal, 409 OverQuota through /v2.0; another project is not affected."""
    quota = LIMITS.max_total_ports
    mine = [await make_port(env) for _ in range(quota - 2)]
    r = await create(env, [{"uuid": NET}] * 3)
    assert "Maximum number of ports exceeded" in fault(r, 403, "forbidden")
    assert env.store.list_servers() == [] and len(env.store.list_ports()) == quota - 2
    r = await create(env, [{"uuid": NET}, {"port": mine[0]["id"]}, {"uuid": NET}])
    assert r.status_code == 202, r.text  # 2 new ports: the quota, exactly
    r = await env.client.post("/v2.0/ports", headers=ALICE, json={"port": {"network_id": NET}})
    assert "Quota exceeded for resources: ['port']" in fault(r, 409, "conflictingRequest")
    assert len(env.store.list_ports()) == quota
    fault(await create(env, [{"uuid": "not-a-uuid"}]), 400, "badRequest")  # the form first
    await make_port(env, BOB)

    r = await env.client.get("/v2.1/os-quota-sets/p-alice", headers=ALICE)
    assert r.status_code == 200
    shown = models_catalog.QuotaSetShow.model_validate(r.json()).quota_set
    assert (shown.id, shown.fixed_ips, shown.instances) == ("p-alice", quota, LIMITS.max_total_instances)
    r = await env.client.get("/v2.1/os-quota-sets/p-alice/detail", headers=ALICE)
    detail = models_catalog.QuotaSetDetailShow.model_validate(r.json()).quota_set
    assert (detail.fixed_ips.in_use, detail.instances.in_use) == (quota, 1)
    r = await env.client.get("/v2.0/quotas/p-alice/details", headers=ALICE)
    assert r.json() == {"quota": {"port": {"limit": quota, "used": quota, "reserved": 0}}}
    assert (await env.client.get("/v2.0/quotas/p-bob", headers=BOB)).json() == {
        "quota": {"port": quota}}
    fault(await env.client.get("/v2.1/os-quota-sets/p-alice", headers=BOB), 403, "forbidden")
    fault(await env.client.get("/v2.0/quotas/p-alice", headers=BOB), 403, "forbidden")
    r = await env.client.get("/v2.0/quotas/p-bob/details", headers=ADMIN)
    assert r.json()["quota"]["port"]["used"] == 1


async def test_a_bound_port_cannot_be_deleted_until_its_server_releases_it(env: Env):
    port = await make_port(env)
    assert (await create(env, [{"port": port["id"]}])).status_code == 202
    r = await env.client.delete(f"/v2.0/ports/{port['id']}", headers=ALICE)
    assert "delete the server first" in fault(r, 409, "conflictingRequest")


async def test_access_ips_are_independent_of_the_nics(env: Env):
    r = await env.client.post("/v2.1/servers", headers=ALICE, json={"server": {
        "name": "vm", "imageRef": str(env.cirros.uuid), "flavorRef": "1", "networks": [{"uuid": NET}],
        "accessIPv4": "203.0.113.7", "accessIPv6": "2001:db8::7"}})
    sid = r.json()["server"]["id"]
    shown = (await env.client.get(f"/v2.1/servers/{sid}", headers=ALICE)).json()["server"]
    assert (shown["accessIPv4"], shown["accessIPv6"]) == ("203.0.113.7", "2001:db8::7")
    addrs = [a["addr"] for a in shown["addresses"]["private"]]
    assert addrs == ["10.213.0.2"]
    r = await env.client.put(f"/v2.1/servers/{sid}", headers=ALICE, json={"server": {
        "accessIPv4": "203.0.113.8", "accessIPv6": "2001:db8::8"}})
    models.ServerShow.model_validate(r.json())
    # Nova's update answer shows addresses without the OS-EXT-IPS attributes.
    assert (r.json()["server"]["accessIPv4"], r.json()["server"]["addresses"]) == (
        "203.0.113.8", {"private": [{"version": 4, "addr": "10.213.0.2"}]})


async def test_the_network_endpoint_tells_its_version_for_client_discovery(env: Env):
    for path in ("/v2.0", "/v2.0/"):
        r = await env.client.get(path, headers=ALICE)
        models_network.NetworkVersionShow.model_validate(r.json())
        assert r.json()["version"]["id"] == "v2.0"
        assert r.json()["version"]["links"][0]["href"] == "http://test/v2.0/"
