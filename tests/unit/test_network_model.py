"""Pure network rules: tap names as Nova makes them, OpenStack MACs, which addresses a
network can give, networks as configuration describes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from ipaddress import IPv4Address

import pytest
from pydantic import ValidationError

from agent.config import load_config
from agent.errors import ConfigError
from agent.model.network import (
    Network,
    Port,
    dhcp_hosts,
    first_free_ip,
    host_side_mac,
    is_tap_name,
    make_mac,
    normalize_mac,
    reserved_reason,
    tap_name,
)

NET = Network(id=uuid.uuid4(), name="n", bridge="br-n", cidr="10.213.7.0/24")


def test_tap_names_are_nova_style_and_fit_ifnamsiz():
    port_id = uuid.UUID("3e5f9c7a-1b2d-4c3e-8f9a-0b1c2d3e4f5a")
    assert tap_name(port_id) == "tap3e5f9c7a-1b"
    assert len(tap_name(uuid.uuid4())) == 14 <= 15
    assert is_tap_name(tap_name(uuid.uuid4()))
    assert not any(map(is_tap_name, ["tap0", "eth0", "vnet3", "tapXYZ12345-00", "catestbr0"]))


def test_macs_are_openstack_unicast_and_the_host_side_differs():
    assert make_mac(b"\x01\xab\xff") == "fa:16:3e:01:ab:ff"
    assert host_side_mac("fa:16:3e:01:ab:ff") == "fe:16:3e:01:ab:ff"
    with pytest.raises(ValueError):
        make_mac(b"\x01")
    assert normalize_mac("FA-16-3E-00-00-0A") == "fa:16:3e:00:00:0a"
    for bad in ("01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "fa:16:3e:0:0:1", "x"):
        assert normalize_mac(bad) is None, bad


def test_the_gateway_defaults_to_the_first_host_and_may_be_set():
    assert NET.gateway == IPv4Address("10.213.7.1")
    other = Network(id=uuid.uuid4(), name="m", bridge="br-m", cidr="10.213.8.0/24",
                    gateway="10.213.8.254")
    assert other.gateway_ip == IPv4Address("10.213.8.254")


@pytest.mark.parametrize(("ip", "reason"), [
    ("10.213.6.5", "not in the network's subnet"),
    ("10.213.7.0", "network address"),
    ("10.213.7.255", "broadcast address"),
    ("10.213.7.1", "gateway address"),
    ("10.213.7.2", None),
    ("10.213.7.254", None),
])
def test_reserved_addresses_are_named(ip, reason):
    got = reserved_reason(NET, IPv4Address(ip))
    assert (got is None) if reason is None else (reason in got)


def test_first_free_ip_skips_the_gateway_and_used_ones_and_ends():
    assert first_free_ip(NET, []) == IPv4Address("10.213.7.2")
    assert first_free_ip(NET, [IPv4Address("10.213.7.2")]) == IPv4Address("10.213.7.3")
    tiny = Network(id=uuid.uuid4(), name="t", bridge="br-t", cidr="10.213.9.0/29")
    used = [IPv4Address(f"10.213.9.{i}") for i in range(2, 7)]
    assert first_free_ip(tiny, used) is None


@pytest.mark.parametrize("fields", [
    {"cidr": "10.213.7.0/30"},  # no room
    {"gateway": "10.213.7.0"},
    {"gateway": "10.213.8.1"},
    {"bridge": "a-name-longer-than-15"},
    {"bridge": "bad/name"},
    {"vlan": 10},  # without physical_interface
    {"vlan": 4095, "physical_interface": "eth1"},
    {"vlan": 1000, "physical_interface": "enp129s0f1np1"},  # enp129s0f1np1.1000 > 15
    {"physical_interface": "br-n"},
    {"mtu": 100},
    {"cidr": "fd00::/64"},
    {"unknown": 1},
])
def test_invalid_networks_are_refused(fields):
    with pytest.raises(ValidationError):
        Network(**{"id": uuid.uuid4(), "name": "n", "bridge": "br-n", "cidr": "10.213.7.0/24", **fields})


def test_vlan_and_flat_uplinks_are_named():
    vlan = Network(id=uuid.uuid4(), name="v", bridge="brv", cidr="10.213.7.0/24", vlan=42,
                   physical_interface="eth1")
    flat = vlan.model_copy(update={"vlan": None})
    assert (vlan.uplink, vlan.network_type) == ("eth1.42", "vlan")
    assert (flat.uplink, flat.network_type) == ("eth1", "flat")
    assert (NET.uplink, NET.network_type) == (None, "local")
    assert vlan.subnet_id == vlan.model_copy().subnet_id != NET.subnet_id


def test_dhcp_hosts_are_the_bound_ports_in_address_order():
    now = datetime.now(UTC)

    def port(ip: str, device: str) -> Port:
        return Port(id=uuid.uuid4(), network_id=NET.id, project_id="p", mac=make_mac(bytes(
            [0, 0, int(ip.rsplit(".", 1)[1])])), ip=ip, device_id=device, created_at=now)

    hosts = dhcp_hosts([port("10.213.7.10", "s1"), port("10.213.7.9", "s2"), port("10.213.7.3", "")])
    assert [str(h.ip) for h in hosts] == ["10.213.7.9", "10.213.7.10"]


def _config(tmp_path, networks: str):
    f = tmp_path / "agent.toml"
    f.write_text(networks)
    return load_config(f, environ={})


def test_networks_come_from_toml(tmp_path):
    config = _config(tmp_path, """
[[networks]]
id = "5a0e9f4e-8c1d-4b7a-9e3f-2d6c8b1a0f11"
name = "private"
bridge = "ca-br0"
cidr = "10.213.10.0/24"
mtu = 1450
default = true

[[networks]]
id = "5a0e9f4e-8c1d-4b7a-9e3f-2d6c8b1a0f12"
name = "static"
bridge = "ca-br1"
cidr = "10.213.11.0/24"
gateway = "10.213.11.254"
dhcp = false
""")
    a, b = config.networks
    assert (a.name, a.mtu, a.default, str(a.gateway), a.dhcp) == ("private", 1450, True, "10.213.10.1", True)
    assert (str(b.gateway), b.dhcp) == ("10.213.11.254", False)


@pytest.mark.parametrize(("second", "why"), [
    ('name = "b"\nbridge = "br-a"\ncidr = "10.213.21.0/24"', "same bridge"),
    ('name = "a"\nbridge = "br-b"\ncidr = "10.213.21.0/24"', "same name"),
    ('name = "b"\nbridge = "br-b"\ncidr = "10.213.20.128/25"', "overlap"),
])
def test_networks_must_not_share_a_name_bridge_or_addresses(tmp_path, second, why):
    with pytest.raises(ConfigError, match=why):
        _config(tmp_path, f"""
[[networks]]
id = "{uuid.uuid4()}"
name = "a"
bridge = "br-a"
cidr = "10.213.20.0/24"

[[networks]]
id = "{uuid.uuid4()}"
{second}
""")


SPANNING = Network(id=uuid.uuid4(), name="s", bridge="br-s", cidr="10.213.9.0/24",
                   host_address="10.213.9.3", reserved_addresses=["10.213.9.2", "10.213.9.4"])


def test_a_host_that_is_not_the_gateway_holds_only_its_own_32_and_does_not_route_the_subnet():
    assert NET.routes_subnet and NET.bridge_address == (IPv4Address("10.213.7.1"), 24)
    assert not SPANNING.routes_subnet
    assert SPANNING.bridge_address == (IPv4Address("10.213.9.3"), 32)
    same = NET.model_copy(update={"host_address": NET.gateway})
    assert same.routes_subnet and same.bridge_address == (IPv4Address("10.213.7.1"), 24)


def test_ipam_never_gives_the_gateway_the_hosts_address_or_a_reserved_one():
    assert first_free_ip(SPANNING, []) == IPv4Address("10.213.9.5")
    assert "this host's address" in (reserved_reason(SPANNING, IPv4Address("10.213.9.3")) or "")
    assert "reserved" in (reserved_reason(SPANNING, IPv4Address("10.213.9.4")) or "")
    assert reserved_reason(SPANNING, IPv4Address("10.213.9.5")) is None


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("host_address", "10.213.10.3", "host_address 10.213.10.3: it is not in the network's subnet"),
    ("host_address", "10.213.9.255", "broadcast address"),
    ("reserved_addresses", ["10.213.9.0"], "reserved_addresses 10.213.9.0: it is the subnet's network"),
])
def test_host_and_reserved_addresses_outside_the_subnets_hosts_are_refused(field, value, reason):
    with pytest.raises(ValidationError, match=reason):
        Network(id=uuid.uuid4(), name="s", bridge="br-s", cidr="10.213.9.0/24", **{field: value})


def test_a_subnets_allocation_pools_leave_out_the_gateway_host_and_reserved_addresses():
    from agent.api.views_network import subnet_view

    assert subnet_view(SPANNING)["allocation_pools"] == [
        {"start": "10.213.9.5", "end": "10.213.9.254"}]  # .1 gateway, .2-.4 hosts'
    middle = SPANNING.model_copy(update={"gateway": IPv4Address("10.213.9.100"),
                                         "reserved_addresses": (IPv4Address("10.213.9.254"),)})
    assert subnet_view(middle)["allocation_pools"] == [
        {"start": "10.213.9.1", "end": "10.213.9.2"}, {"start": "10.213.9.4", "end": "10.213.9.99"},
        {"start": "10.213.9.101", "end": "10.213.9.253"}]
    assert subnet_view(NET)["allocation_pools"] == [{"start": "10.213.7.2", "end": "10.213.7.254"}]
