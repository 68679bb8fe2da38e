"""Servers on networks, through the core with fake plumbing: ports allocated with the
server, taps plugged and leases served before the domain is defined, everything released
on delete or failure, and the start-up resync repairing what a host reboot took away."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address

import pytest

from agent.adapters.folders import LocalFolders
from agent.core.jobs import JobRunner
from agent.core.netplumbing import NetworkPlumbing
from agent.core.networks import NetworkCatalog, PortService
from agent.core.recovery import sweep
from agent.core.workflows.create import CreateWorkflow
from agent.core.workflows.delete import DeleteWorkflow
from agent.errors import (
    HypervisorError,
    InvalidInput,
    NetworkError,
    NoMoreAddresses,
    PortInUse,
)
from agent.model.job import JobKind, JobStatus
from agent.model.network import Network, NetworkRequest, PortStatus
from agent.model.requests import CreateServer
from agent.model.states import Status
from tests.unit.core.conftest import ALICE, BOB, IMAGE_ID, World
from tests.unit.fakes.network import FakeDhcp, FakeGuard, FakePlumber

NET_A = Network(id=uuid.UUID("11111111-1111-4111-8111-111111111111"), name="net-a",
                bridge="brA", cidr="10.213.1.0/24", mtu=1400)
NET_B = Network(id=uuid.UUID("22222222-2222-4222-8222-222222222222"), name="net-b",
                bridge="brB", cidr="10.213.2.0/28", gateway="10.213.2.14")
NET_NODHCP = Network(id=uuid.UUID("33333333-3333-4333-8333-333333333333"), name="static",
                     bridge="brC", cidr="10.213.3.0/24", dhcp=False)


@dataclass
class Net:
    world: World
    plumber: FakePlumber
    dhcp: FakeDhcp
    guard: FakeGuard
    ports: PortService
    plumbing: NetworkPlumbing

    async def create(self, *networks: NetworkRequest, ctx=ALICE, **kw):
        return (await self.world.create(ctx, networks=tuple(networks), **kw))[0]

    async def user_port(self, network: Network = NET_B, ctx=ALICE, **kw):
        return await self.ports.create_port(ctx, str(network.id), **kw)


@pytest.fixture
def net(world: World) -> Net:
    catalog = NetworkCatalog([NET_A, NET_B, NET_NODHCP])
    plumber, dhcp = FakePlumber(), FakeDhcp()
    guard = FakeGuard(plumber.calls)
    plumbing = NetworkPlumbing(world.store, catalog, plumber, dhcp, guard=guard)
    ports = PortService(world.store, catalog)
    world.deps.network = plumbing
    world.service.ports = ports
    return Net(world, plumber, dhcp, guard, ports, plumbing)


def on(network: Network, fixed_ip: str | None = None) -> NetworkRequest:
    return NetworkRequest(network_id=str(network.id), fixed_ip=fixed_ip)


def port(port_id) -> NetworkRequest:
    return NetworkRequest(port_id=str(port_id))


# -- create ---------------------------------------------------------------------------------

async def test_two_nics_get_taps_in_their_bridges_leases_and_domain_interfaces(net: Net):
    mine = await net.user_port(NET_B)
    server = await net.create(on(NET_A, "10.213.1.50"), port(mine.id))
    await net.world.runner.idle()
    assert net.world.store.get_server(server.id).status is Status.ACTIVE
    nics = net.plumbing.ports_of(server.id)
    assert [(str(p.ip), p.device_index) for p in nics] == [("10.213.1.50", 0), (str(mine.ip), 1)]
    assert all(p.status is PortStatus.ACTIVE for p in nics)
    assert {t: (tap.bridge, tap.mtu) for t, tap in net.plumber.taps.items()} == {
        nics[0].tap: ("brA", 1400), nics[1].tap: ("brB", 1500)}
    spec = net.world.hypervisor.domains[server.id]
    assert [(i.tap, i.mac, i.mtu) for i in spec.interfaces] == [
        (nics[0].tap, nics[0].mac, 1400), (nics[1].tap, mine.mac, 1500)]
    assert net.dhcp.lease(NET_A.id, nics[0].mac) == "10.213.1.50"
    assert net.dhcp.lease(NET_B.id, mine.mac) == str(mine.ip)
    assert "create:domain" in net.world.checkpoints  # the step that plugs the taps


async def test_each_tap_is_guarded_with_its_ports_mac_and_ip_before_it_joins_the_bridge(
        net: Net):
    """Anti-spoofing: a port_security network's tap gets its port's rules before it is
    plugged; a network with port_security off gets none; delete takes them away."""
    open_net = NET_B.model_copy(update={"port_security": False})
    catalog = NetworkCatalog([NET_A, open_net])
    guard = net.guard
    net.world.deps.network = NetworkPlumbing(net.world.store, catalog, net.plumber, net.dhcp,
                                             guard=guard)
    net.world.service.ports = PortService(net.world.store, catalog)
    server = await net.create(on(NET_A, "10.213.1.9"), on(open_net))
    await net.world.runner.idle()
    guarded, unguarded = net.world.deps.network.ports_of(server.id)
    assert guard.rules == {guarded.tap: (guarded.mac, "10.213.1.9")}
    calls = net.plumber.calls
    assert calls.index(("guard", guarded.tap)) < calls.index(("plug", guarded.tap))
    assert ("unguard", unguarded.tap) in calls  # rules of an earlier life never linger
    await net.world.service.delete(ALICE, server.id)
    await net.world.runner.idle()
    assert guard.rules == {}


async def test_taps_are_plugged_before_the_domain_is_defined(net: Net):
    server = await net.create(on(NET_A))
    await net.world.runner.idle()
    order = [op for op, _ in net.plumber.calls] + [op for op, u in net.world.hypervisor.calls
                                                   if u == server.id]
    assert order.index("plug") < order.index("define")
    plugs = [i for i, (op, _) in enumerate(net.plumber.calls) if op == "plug"]
    tap = net.plumber.calls[plugs[0]][1]
    assert net.plumber.calls[plugs[0] - 2:plugs[0]] == [("ensure_bridge", "brA"), ("guard", tap)]


async def test_addresses_are_allocated_in_order_skipping_the_gateway_and_requested_ones(net: Net):
    first = await net.create(on(NET_A), on(NET_A, "10.213.1.2"), on(NET_A))
    ips = [str(p.ip) for p in net.plumbing.ports_of(first.id)]
    assert ips == ["10.213.1.3", "10.213.1.2", "10.213.1.4"]  # .1 is the gateway
    await net.world.runner.idle()


async def test_a_network_without_dhcp_gets_a_nic_but_no_dhcp_server(net: Net):
    server = await net.create(on(NET_NODHCP))
    await net.world.runner.idle()
    assert len(net.world.hypervisor.domains[server.id].interfaces) == 1
    assert NET_NODHCP.id not in net.dhcp.servers


async def test_no_networks_means_no_nic_unless_a_network_is_the_default(net: Net):
    bare, _ = await net.world.create()  # networks absent: the catalog has no default network
    assert net.plumbing.ports_of(bare.id) == []
    default = NET_B.model_copy(update={"default": True})
    net.ports.catalog = net.plumbing.catalog = NetworkCatalog([NET_A, default])
    auto, _ = await net.world.create()
    none = await net.create()  # networks=() is "none"
    assert [p.network_id for p in net.plumbing.ports_of(auto.id)] == [NET_B.id]
    assert net.plumbing.ports_of(none.id) == []
    await net.world.runner.idle()


# -- IPAM refusals: nothing is committed -----------------------------------------------------

@pytest.mark.parametrize(("fixed_ip", "reason"), [
    ("10.213.9.5", "not in the network's subnet"),
    ("10.213.1.1", "gateway address"),
    ("10.213.1.0", "network address"),
    ("10.213.1.255", "broadcast address"),
    ("not-an-ip", "not an IP address"),
    ("fd00::5", "IPv4 subnet only"),
])
async def test_a_requested_address_the_network_cannot_give_is_refused(net: Net, fixed_ip, reason):
    with pytest.raises(InvalidInput, match=reason) as e:
        await net.create(on(NET_A, fixed_ip))
    assert e.value.field == "networks"
    assert net.world.store.list_servers() == [] and net.world.store.list_ports() == []


async def test_a_fixed_ip_in_use_is_a_bad_request_and_the_same_address_twice_too(net: Net):
    """Nova's FixedIpAlreadyInUse (400) for a server's create, not Neutron's 409."""
    await net.create(on(NET_A, "10.213.1.9"))
    with pytest.raises(InvalidInput, match=r"10\.213\.1\.9 is already in use on instance"):
        await net.create(on(NET_A, "10.213.1.9"))
    with pytest.raises(InvalidInput, match="already in use"):
        await net.create(on(NET_A, "10.213.1.10"), on(NET_A, "10.213.1.10"))
    assert len(net.world.store.list_servers()) == 1
    await net.world.runner.idle()


async def test_unknown_or_malformed_networks_and_ports_are_bad_requests_naming_networks(net: Net):
    cases = [NetworkRequest(network_id=str(uuid.uuid4())), NetworkRequest(network_id="nope"),
             NetworkRequest(port_id=str(uuid.uuid4())), NetworkRequest(port_id="nope"),
             NetworkRequest(), NetworkRequest(port_id=str((await net.user_port()).id), fixed_ip="10.213.2.3")]
    for req in cases:
        with pytest.raises(InvalidInput) as e:
            await net.create(req)
        assert e.value.field == "networks", req


async def test_another_projects_port_is_not_found_and_a_bound_port_is_in_use(net: Net):
    bobs = await net.user_port(ctx=BOB)
    with pytest.raises(InvalidInput, match="could not be found"):
        await net.create(port(bobs.id))
    mine = await net.user_port()
    await net.create(port(mine.id))
    with pytest.raises(PortInUse):
        await net.create(port(mine.id))
    twice = await net.user_port()
    with pytest.raises(InvalidInput, match="more than once"):
        await net.create(port(twice.id), port(twice.id))
    await net.world.runner.idle()


async def test_a_full_network_has_no_more_addresses(net: Net):
    # 10.213.2.0/28 with the gateway at .14: .1 to .13 for ports
    for _ in range(13):
        await net.user_port(NET_B)
    with pytest.raises(Exception, match="No more IP addresses"):
        await net.create(on(NET_B))


# -- delete and failure ---------------------------------------------------------------------

async def test_delete_removes_taps_and_leases_deletes_our_ports_and_keeps_the_users(net: Net):
    mine = await net.user_port(NET_B)
    server = await net.create(on(NET_A), port(mine.id))
    await net.world.runner.idle()
    ours = net.plumbing.ports_of(server.id)[0]
    assert net.dhcp.lease(NET_A.id, ours.mac) and net.dhcp.lease(NET_B.id, mine.mac)
    await net.world.service.delete(ALICE, server.id)
    await net.world.runner.idle()
    assert net.world.store.get_server(server.id).status is Status.DELETED
    assert net.plumber.taps == {}
    assert net.world.store.get_port(ours.id) is None
    kept = net.world.store.get_port(mine.id)
    assert (kept.device_id, kept.status, kept.ip) == ("", PortStatus.DOWN, mine.ip)
    assert net.dhcp.hosts(NET_A.id) == {} and net.dhcp.hosts(NET_B.id) == {}
    assert net.dhcp.servers[NET_A.id].leases == set() == net.dhcp.servers[NET_B.id].leases
    again = await net.create(port(mine.id))  # a detached port can be used again
    assert net.plumbing.ports_of(again.id)[0].id == mine.id
    await net.world.runner.idle()


async def test_a_failed_build_releases_its_ports_and_leaves_nothing_plugged(net: Net):
    net.world.hypervisor.fail_on["start"] = HypervisorError("no room")
    server = await net.create(on(NET_A, "10.213.1.77"))
    await net.world.runner.idle()
    assert net.world.store.get_server(server.id).status is Status.ERROR
    assert net.world.store.list_ports() == [] and net.plumber.taps == {}
    assert net.dhcp.hosts(NET_A.id) == {}
    net.world.hypervisor.fail_on.clear()
    await net.create(on(NET_A, "10.213.1.77"))  # the address is free again
    await net.world.runner.idle()


async def test_a_plumbing_failure_fails_the_build_with_its_message(net: Net):
    net.plumber.fail_on["plug"] = NetworkError("plug tap123: Operation not permitted (errno 1)")
    server = await net.create(on(NET_A))
    await net.world.runner.idle()
    s = net.world.store.get_server(server.id)
    assert s.status is Status.ERROR and "Operation not permitted" in s.fault.message
    assert net.world.store.list_ports() == []



async def test_a_port_given_this_hosts_own_address_is_refused_before_any_tap(net: Net):
    """A controller whose config does not reserve a host's host_address may give it to a
    port: that host refuses to plug it (two would answer ARP for it) and says how to fix."""
    here = NET_A.model_copy(update={"host_address": NET_A.cidr[2]})  # IPAM's first pick
    net.plumbing.catalog = NetworkCatalog([here, NET_B, NET_NODHCP])
    server = await net.create(on(NET_A))
    await net.world.runner.idle()
    s = net.world.store.get_server(server.id)
    assert s.status is Status.ERROR
    assert "address 10.213.1.2: it is this host's host_address" in s.fault.message
    assert "reserved_addresses" in s.fault.message
    assert net.plumber.taps == {} and net.world.store.list_ports() == []

# -- start-up resync ------------------------------------------------------------------------

async def test_resync_replugs_taps_lost_to_a_reboot_and_restarts_dhcp(net: Net):
    a = await net.create(on(NET_A))
    b = await net.create(on(NET_B))
    await net.world.runner.idle()
    taps = set(net.plumber.taps)
    rules = dict(net.guard.rules)
    net.plumber.reboot()
    net.guard.rules.clear()  # a reboot empties nftables too
    net.dhcp.stop_all()
    report = await net.plumbing.resync_host(net.world.hypervisor)
    assert set(net.plumber.taps) == taps == set(report.taps_replugged)
    assert net.guard.rules == rules and set(rules) == taps  # anti-spoofing back with the taps
    assert set(net.plumber.bridges) == {"brA", "brB", "brC"}
    assert all(s.running for s in net.dhcp.servers.values())
    for server, network in ((a, NET_A), (b, NET_B)):
        [p] = net.plumbing.ports_of(server.id)
        assert net.dhcp.lease(network.id, p.mac) == str(p.ip)


async def test_resync_removes_stray_taps_and_releases_ports_of_servers_that_are_gone(net: Net):
    server = await net.create(on(NET_A))
    await net.world.runner.idle()
    stray = "tap0badc0de-00"
    net.plumber.taps[stray] = net.plumber.taps[net.plumbing.ports_of(server.id)[0].tap]
    net.guard.rules[stray] = ("fa:16:3e:00:00:98", "10.213.1.201")
    net.plumber.taps["vethkeep"] = net.plumber.taps[stray]  # not a tap name: never ours
    ghost = uuid.uuid4()
    await net.world.store.add_port(net.world.store.list_ports()[0].model_copy(update={
        "id": uuid.uuid4(), "ip": IPv4Address("10.213.1.200"), "mac": "fa:16:3e:00:00:99",
        "device_id": str(ghost), "created_at": datetime.now(UTC)}))
    report = await net.plumbing.resync_host(net.world.hypervisor)
    assert report.taps_removed == [stray] and "vethkeep" in net.plumber.taps
    assert stray not in net.guard.rules
    assert len(report.ports_released) == 1
    assert [p.device_id for p in net.world.store.list_ports()] == [str(server.id)]


async def test_resync_leaves_a_building_servers_ports_for_its_job(net: Net):
    server = await net.create(on(NET_A))  # committed, not run yet: no domain
    report = await net.plumbing.resync_host(net.world.hypervisor)
    assert report.taps_replugged == [] and report.ports_released == []
    assert len(net.plumbing.ports_of(server.id)) == 1
    await net.world.runner.idle()
    assert len(net.plumber.taps) == 1


async def test_the_supervisor_restarts_a_dead_dhcp_server(net: Net):
    await net.create(on(NET_A))
    await net.world.runner.idle()
    net.dhcp.servers[NET_A.id].running = False
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(net.plumbing.supervise(interval=0.01), timeout=0.1)
    assert net.dhcp.servers[NET_A.id].running and net.dhcp.servers[NET_A.id].starts == 2


async def test_servers_built_together_all_get_their_leases(net: Net):
    servers = [await net.create(on(NET_A)) for _ in range(3)]
    await net.world.runner.idle()
    macs = {net.plumbing.ports_of(s.id)[0].mac for s in servers}
    assert set(net.dhcp.hosts(NET_A.id)) == macs


async def test_a_build_resumed_after_the_domain_step_plugs_again(net: Net):
    net.world.runner._closing = True  # this daemon dies before running anything itself
    server = await net.create(on(NET_A))
    [job] = net.world.store.unfinished_jobs()
    # A daemon that died right after "domain" (taps plugged), and a host reboot since: no
    # tap left.
    await net.world.store.update_job(job.id, {"status": JobStatus.RUNNING, "step": "domain", "attempts": 1})
    files = net.world.deps.files(server.id)
    files.dir.mkdir(parents=True)
    files.disk.write_text("overlay")
    runner = JobRunner(net.world.deps, {JobKind.CREATE: CreateWorkflow(net.world.deps, net.world.batcher),
                                        JobKind.DELETE: DeleteWorkflow(net.world.deps)})
    assert runner.resume_all() == 1
    await runner.idle()
    assert net.world.store.get_server(server.id).status is Status.ACTIVE
    [p] = net.plumbing.ports_of(server.id)
    assert p.tap in net.plumber.taps and net.world.hypervisor.domains[server.id].interfaces[0].tap == p.tap
    assert net.world.checkpoints == ["create:started", "create:running"]


async def test_resync_goes_on_past_a_failure_and_without_libvirt(net: Net):
    server = await net.create(on(NET_A))
    await net.world.runner.idle()
    net.plumber.reboot()
    net.plumber.fail_on["ensure_bridge"] = NetworkError("bridge brB: Operation not permitted")
    net.plumber.bridges["brA"] = NET_A  # brA survived; brB cannot be made
    net.world.hypervisor.domain_uuids = lambda: (_ for _ in ()).throw(HypervisorError("down"))
    report = await net.plumbing.resync_host(net.world.hypervisor)
    assert [p.tap for p in net.plumbing.ports_of(server.id)] == report.taps_replugged
    assert len(report.errors) == 3 and NET_A.id in report.dhcp_synced


async def test_a_multi_create_that_runs_out_of_addresses_makes_nothing(net: Net):
    """All or nothing: three servers on a network with two free addresses left."""
    taken = []
    while True:
        try:
            taken.append(await net.user_port(NET_B))
        except NoMoreAddresses:
            break
    for p in taken[:2]:
        await net.ports.delete_port(ALICE, str(p.id))
    with pytest.raises(NoMoreAddresses):
        await net.world.service.create_many(ALICE, CreateServer(
            name="web", image_ref=IMAGE_ID, flavor_ref="1", min_count=3,
            networks=(on(NET_B),)))
    assert net.world.store.list_servers() == []
    assert len(net.world.store.list_ports(network_id=NET_B.id)) == len(taken) - 2
    made = await net.world.service.create_many(ALICE, CreateServer(
        name="web", image_ref=IMAGE_ID, flavor_ref="1", min_count=2, networks=(on(NET_B),)))
    await net.world.runner.idle()
    ips = {p.ip for s in made.servers for p in net.plumbing.ports_of(s.id)}
    assert ips == {taken[0].ip, taken[1].ip}


def _forget(store, server_id) -> None:
    """The store loses a server entirely (an older agent.db restored, a lost one replaced)."""
    store._servers.pop(server_id)
    store._jobs = {i: j for i, j in store._jobs.items() if j.server_id != server_id}
    store._ports = {i: p for i, p in store._ports.items() if p.device_id != str(server_id)}


async def test_a_quarantined_guests_tap_stays_plugged_and_is_never_given_to_a_new_port(net: Net):
    server = await net.create(on(NET_A))
    await net.world.runner.idle()
    [old] = net.plumbing.ports_of(server.id)
    _forget(net.world.store, server.id)

    swept = await sweep(net.world.deps, LocalFolders())
    net.plumbing.quarantined_taps = swept.quarantined_taps
    report = await net.plumbing.resync_host(net.world.hypervisor)

    assert swept.quarantined_taps == {old.tap} and report.taps_removed == []
    assert net.plumber.taps[old.tap].bridge == "brA"
    # A new port whose tap name would be the quarantined guest's: its build is refused.
    twin = await net.ports.create_port(ALICE, str(NET_A.id))
    clash = twin.model_copy(update={"id": uuid.UUID(str(old.id)[:11] + str(twin.id)[11:]),
                                    "ip": IPv4Address("10.213.1.77"), "mac": "fa:16:3e:00:00:77"})
    await net.world.store.delete_port(twin.id)
    await net.world.store.add_port(clash)
    assert clash.tap == old.tap
    victim = await net.create(port(clash.id))
    await net.world.runner.idle()
    s = net.world.store.get_server(victim.id)
    assert s.status is Status.ERROR and "quarantined" in s.fault.message
    assert net.plumber.taps[old.tap].bridge == "brA" and old.tap in swept.quarantined_taps


async def test_a_multi_create_counts_every_planned_server_against_the_port_quota(net: Net):
    """The quota holds for a batch: 3 servers with one NIC each, 2 ports of quota left,
    is a 403 and nothing is made; 2 servers fit."""
    from agent.errors import QuotaExceeded
    from agent.model.requests import Limits

    net.world.service.ports = PortService(net.world.store, net.ports.catalog,
                                          limits=Limits(max_total_ports=2))
    with pytest.raises(QuotaExceeded):
        await net.world.service.create_many(ALICE, CreateServer(
            name="web", image_ref=IMAGE_ID, flavor_ref="1", min_count=3, networks=(on(NET_A),)))
    assert net.world.store.list_servers() == []
    made = await net.world.service.create_many(ALICE, CreateServer(
        name="web", image_ref=IMAGE_ID, flavor_ref="1", min_count=2, networks=(on(NET_A),)))
    assert len(made.servers) == 2
