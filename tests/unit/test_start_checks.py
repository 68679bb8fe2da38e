"""The start checks: what would make every build fail (a state dir QEMU and dnsmasq cannot
reach, a subnet a host route already covers) is found before the daemon serves, named
with its fix, and doctor reports it first. Facts (folder modes, routes) are faked."""

from __future__ import annotations

import uuid
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from agent import wiring
from agent.adapters.host_checks import check_state_dir_reachable, check_subnets, host_checks
from agent.config import Config, load_config
from agent.errors import ConfigError, HostUnfit, NetworkError
from agent.model.host import HostRoute, overlapping_routes, untraversable_folder
from agent.model.network import Network

NET = Network(id=uuid.UUID("11111111-1111-4111-8111-111111111111"), name="private",
              bridge="brpriv", cidr="10.213.7.0/24")


def modes(table: dict[str, int]):
    return lambda path: table.get(str(path))


def config(**kw) -> Config:
    return Config(**{"state_dir": Path("/srv/home/agent/state"), **kw})


def test_a_folder_above_the_state_dir_without_o_x_is_named():
    table = {"/": 0o40755, "/srv": 0o40755, "/srv/home": 0o40700, "/srv/home/agent": 0o40755}
    assert untraversable_folder(Path("/srv/home/agent/state"), modes(table)) == Path("/srv/home")
    table["/srv/home"] = 0o40711  # o+x is enough: nobody needs to list it
    assert untraversable_folder(Path("/srv/home/agent/state"), modes(table)) is None


def test_folders_still_to_be_made_are_not_held_against_the_host():
    table = {"/": 0o40755, "/srv": 0o40755}
    assert untraversable_folder(Path("/srv/new/deeper/state"), modes(table)) is None


def test_the_state_dir_check_says_why_and_how_to_fix_it():
    table = {"/": 0o40755, "/srv": 0o40755, "/srv/home": 0o40700, "/srv/home/agent": 0o40755}
    result = check_state_dir_reachable(config(), modes(table))
    assert not result.ok
    assert "/srv/home (mode 0700) is not world-traversable" in result.detail
    assert "dnsmasq" in result.detail and "QEMU" in result.detail
    assert result.fix.startswith("chmod o+x /srv/home")


def test_a_subnet_overlapping_a_host_route_elsewhere_is_refused_but_not_its_own_or_default():
    routes = [HostRoute(destination=IPv4Network("0.0.0.0/0"), interface="eth0"),
              HostRoute(destination=IPv4Network("10.213.7.0/24"), interface="brpriv"),
              HostRoute(destination=IPv4Network("10.213.0.0/16"), interface="wg0"),
              HostRoute(destination=IPv4Network("192.0.2.0/24"), interface="eth0")]
    assert overlapping_routes(NET.cidr, NET.bridge, routes) == [routes[2]]
    result = check_subnets(config(networks=[NET]), lambda: routes)
    assert not result.ok
    assert "network private (10.213.7.0/24) overlaps the host route 10.213.0.0/16 on wg0" in result.detail
    assert check_subnets(config(networks=[NET]), lambda: routes[:2] + routes[3:]).ok


def test_routes_that_cannot_be_read_fail_the_subnet_check():
    def unreadable():
        raise NetworkError("cannot read the host's routes: permission denied")

    result = check_subnets(config(networks=[NET]), unreadable)
    assert not result.ok and "permission denied" in result.detail
    assert check_subnets(config(), unreadable).ok  # no networks: nothing to compare


def test_the_daemon_refuses_to_start_naming_every_failed_start_check(monkeypatch):
    monkeypatch.setattr("agent.adapters.host_checks.folder_mode", modes(
        {"/": 0o40755, "/srv": 0o40700}))
    monkeypatch.setattr("agent.adapters.host_checks.host_routes", lambda: [
        HostRoute(destination=IPv4Network("10.213.7.128/25"), interface="eth1")])
    with pytest.raises(HostUnfit) as refused:
        wiring.refuse_unfit_host(config(networks=[NET]))
    assert isinstance(refused.value, ConfigError)  # the CLI prints it and exits 2
    message = str(refused.value)
    assert "/srv (mode 0700) is not world-traversable" in message
    assert "overlaps the host route 10.213.7.128/25 on eth1" in message
    assert "fix: chmod o+x /srv" in message


def test_doctor_runs_the_start_checks_first():
    names = [name for name, _ in host_checks(config(), guestfs=False)]
    assert names[:2] == ["state dir", "subnets"]


def test_a_bridge_name_over_15_bytes_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="not a valid interface name"):
        load_config(None, {"networks": [{"id": str(NET.id), "name": "n", "bridge": "b" * 16,
                                         "cidr": "10.213.9.0/24"}]}, environ={})


def test_a_network_this_host_only_bridges_is_not_held_against_a_route_to_its_subnet():
    """host_address apart from the gateway: the bridge holds a /32, the host routes nothing
    into the subnet, so another interface's route to it (e.g. the gateway host's bridge on
    the same machine) is no clash; a routed network on the same subnet still is."""
    routes = [HostRoute(destination=IPv4Network("10.213.7.0/24"), interface="brother")]
    l2_only = NET.model_copy(update={"host_address": NET.cidr[3]})
    result = check_subnets(config(networks=[l2_only]), lambda: routes)
    assert result.ok and "1 L2-only" in result.detail
    assert not check_subnets(config(networks=[NET]), lambda: routes).ok
