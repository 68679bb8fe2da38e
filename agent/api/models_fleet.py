"""Response shapes of server groups and the host admin API (/os-services,
/os-hypervisors) at 2.1, for the OpenAPI document only (see models.py)."""

from __future__ import annotations

from agent.api.models import _Out


class ServerGroup(_Out):
    id: str
    name: str
    policies: list[str]
    members: list[str]
    metadata: dict[str, str]


class ServerGroupShow(_Out):
    server_group: ServerGroup


class ServerGroupIndex(_Out):
    server_groups: list[ServerGroup]


class Service(_Out):
    id: int
    binary: str
    host: str
    zone: str
    status: str
    state: str
    updated_at: str | None
    disabled_reason: str | None


class ServiceIndex(_Out):
    services: list[Service]


class ServiceUpdated(_Out):
    host: str
    binary: str
    status: str
    disabled_reason: str | None = None


class ServiceUpdateShow(_Out):
    service: ServiceUpdated


class HypervisorSummary(_Out):
    id: int
    hypervisor_hostname: str
    state: str
    status: str


class HypervisorServer(_Out):
    name: str
    uuid: str


class HypervisorWithServers(HypervisorSummary):
    servers: list[HypervisorServer] | None = None


class HypervisorServersIndex(_Out):
    hypervisors: list[HypervisorWithServers]


class HypervisorService(_Out):
    id: int
    host: str
    disabled_reason: str | None


class HypervisorDetail(HypervisorSummary):
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    hypervisor_type: str
    hypervisor_version: int
    free_ram_mb: int
    free_disk_gb: int
    current_workload: int
    running_vms: int
    cpu_info: str
    disk_available_least: int
    host_ip: str
    service: HypervisorService


class HypervisorIndex(_Out):
    hypervisors: list[HypervisorSummary]


class HypervisorDetailIndex(_Out):
    hypervisors: list[HypervisorDetail]


class HypervisorShow(_Out):
    hypervisor: HypervisorDetail


class HypervisorStatistics(_Out):
    count: int
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    free_ram_mb: int
    free_disk_gb: int
    current_workload: int
    running_vms: int
    disk_available_least: int


class HypervisorStatisticsShow(_Out):
    hypervisor_statistics: HypervisorStatistics
