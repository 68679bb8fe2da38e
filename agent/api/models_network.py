"""Response and request shapes of the Neutron-style /v2.0 routes, for the OpenAPI document
(handlers build dicts in views_network.py; tests hold every body to these models)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agent.api.models import Link, _Out


class NetworkVersion(_Out):
    id: str
    status: str
    links: list[Link]


class NetworkVersionShow(_Out):
    version: NetworkVersion


class NetworkDetail(_Out):
    id: str
    name: str
    status: str
    admin_state_up: bool
    shared: bool
    router_external: bool = Field(alias="router:external")
    subnets: list[str]
    mtu: int
    tenant_id: str
    project_id: str
    network_type: str = Field(alias="provider:network_type")
    physical_network: str | None = Field(alias="provider:physical_network")
    segmentation_id: int | None = Field(alias="provider:segmentation_id")
    port_security_enabled: bool


class NetworkIndex(_Out):
    networks: list[NetworkDetail]


class NetworkShow(_Out):
    network: NetworkDetail


class AllocationPool(_Out):
    start: str
    end: str


class SubnetDetail(_Out):
    id: str
    name: str
    network_id: str
    ip_version: int
    cidr: str
    gateway_ip: str
    enable_dhcp: bool
    allocation_pools: list[AllocationPool]
    dns_nameservers: list[str]
    host_routes: list[dict[str, str]]
    tenant_id: str
    project_id: str


class SubnetIndex(_Out):
    subnets: list[SubnetDetail]


class SubnetShow(_Out):
    subnet: SubnetDetail


class FixedIpOut(_Out):
    subnet_id: str
    ip_address: str


class PortDetail(_Out):
    id: str
    name: str
    network_id: str
    tenant_id: str
    project_id: str
    mac_address: str
    fixed_ips: list[FixedIpOut]
    device_id: str
    device_owner: str
    status: str
    admin_state_up: bool
    port_security_enabled: bool
    created_at: str


class PortIndex(_Out):
    ports: list[PortDetail]


class PortShow(_Out):
    port: PortDetail


# -- request bodies ------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedIpIn(_Body):
    ip_address: str | None = Field(default=None, json_schema_extra={"format": "ipv4"})
    subnet_id: str | None = Field(default=None, description="Accepted; the network has one subnet")


class PortCreate(_Body):
    network_id: str
    name: Annotated[str, Field(max_length=255)] = ""
    fixed_ips: Annotated[list[FixedIpIn], Field(max_length=1)] | None = Field(
        default=None, description="At most one address (IPv4); absent: the first free one")
    mac_address: str | None = Field(default=None, description="Default: fa:16:3e:xx:xx:xx")
    admin_state_up: bool | None = Field(default=None, description="Accepted; ports are always up")
    device_owner: str | None = Field(default=None, description="Accepted and ignored")
    tenant_id: str | None = Field(default=None, description="Must be the caller's project")
    project_id: str | None = Field(default=None, description="Must be the caller's project")


class PortCreateBody(_Body):
    port: PortCreate
