"""The fleet harness (tests/support/fleet.py) writes one controller's and N agents' configs
that keep the agents apart on one machine and point them at the controller. Starting them
is for the fleet e2e tests (after the controller and agent branches merge)."""

from __future__ import annotations

import stat
import tomllib
from ipaddress import IPv4Network
from typing import Any

import pytest

from agent.config import AmqpConfig, Config
from tests.support.fleet import Fleet, FleetNetwork

FLEET_KEYS = {"controller_url", "fleet_token_file"}  # FLEET.md's, added by the fleet branches


def read(daemon) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return tomllib.loads(daemon.config_file.read_text())


def valid(config: dict[str, Any]) -> Config:
    """The config as the agent reads it, but for the [amqp] keys other branches add."""
    amqp = {k: v for k, v in config["amqp"].items() if k not in FLEET_KEYS}
    return Config.model_validate({**config, "amqp": AmqpConfig.model_validate(amqp)})


def test_each_agent_has_its_own_host_state_dir_socket_and_bridges(guest_dir):
    nets = (FleetNetwork("blue", IPv4Network("10.77.1.0/24")),
            FleetNetwork("red", IPv4Network("10.77.2.0/24")))
    fleet = Fleet(guest_dir, agents=3, networks=nets)
    agents = [valid(read(d)) for d in fleet.agents.values()]
    assert [a.host for a in agents] == fleet.hosts and len(set(fleet.hosts)) == 3
    assert len({a.state_dir for a in agents}) == 3 and len({a.instances_dir for a in agents}) == 3
    assert len({a.socket_path for a in agents}) == 3
    assert all(a.socket_path.parent == a.state_dir for a in agents)
    bridges = [[n.bridge for n in a.networks] for a in agents]
    assert len({b for per_host in bridges for b in per_host}) == 6
    for host, agent in zip(fleet.hosts, agents, strict=True):
        assert [n.bridge for n in agent.networks] == fleet.bridges(host)
        assert all(b.startswith("catest") and len(b) <= 15 for b in fleet.bridges(host))
        assert [(n.id, n.cidr) for n in agent.networks] == [(n.id, n.cidr) for n in nets]


def test_agents_point_at_the_controller_and_share_its_fleet_token_file(guest_dir):
    fleet = Fleet(guest_dir, agents=2)
    controller = read(fleet.controller)
    assert fleet.controller.command == ("controller", "serve")
    assert controller["api_listen"] == fleet.controller.url.removeprefix("http://")
    for daemon in fleet.agents.values():
        config = read(daemon)
        assert daemon.command == ("serve",)
        assert config["amqp"]["controller_url"] == fleet.controller.url
        assert config["amqp"]["fleet_token_file"] == controller["amqp"]["fleet_token_file"]
        assert config["amqp"]["vhost"] == controller["amqp"]["vhost"] == "compute"
    assert stat.S_IMODE(fleet.token_file.stat().st_mode) == 0o600
    assert len(fleet.token_file.read_text().strip()) >= 32


def test_two_fleets_on_one_machine_share_no_host_name_or_bridge(guest_dir):
    net = (FleetNetwork("blue", IPv4Network("10.77.1.0/24")),)
    one, two = Fleet(guest_dir / "a", networks=net), Fleet(guest_dir / "b", networks=net)
    assert not set(one.hosts) & set(two.hosts)
    assert not {b for h in one.hosts for b in one.bridges(h)} & {b for h in two.hosts for b in two.bridges(h)}


def test_a_base_folder_too_long_for_console_sockets_is_refused_before_any_daemon(tmp_path):
    with pytest.raises(ValueError, match="too long"):
        Fleet(tmp_path / ("x" * 60))


def test_a_segment_network_gives_each_agent_an_uplink_and_all_but_the_first_a_host_address(guest_dir):
    net = FleetNetwork("seg", IPv4Network("10.77.3.0/24"), segment=True)
    fleet = Fleet(guest_dir, agents=3, networks=(net,))
    [ctl_net] = valid(read(fleet.controller)).networks
    assert [str(a) for a in ctl_net.reserved_addresses] == ["10.77.3.2", "10.77.3.3"]
    agents = [valid(read(d)).networks[0] for d in fleet.agents.values()]
    assert [n.routes_subnet for n in agents] == [True, False, False]
    assert [str(n.host_address) for n in agents[1:]] == ["10.77.3.2", "10.77.3.3"]
    uplinks = [n.physical_interface for n in agents]
    assert len(set(uplinks)) == 3 and all(u and u.startswith(f"catest{fleet.run}") for u in uplinks)
    assert all(n.reserved_addresses == ctl_net.reserved_addresses for n in agents)
