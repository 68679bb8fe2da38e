"""Response shapes of the catalog (flavors, images), /limits and the quota sets, for the
OpenAPI document only (see models.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agent.api.models import Link, _Out

# -- catalog -----------------------------------------------------------------------------

class FlavorSummary(_Out):
    id: str
    name: str
    links: list[Link]


class FlavorDetail(FlavorSummary):
    ram: int
    vcpus: int
    disk: int
    ephemeral: int = Field(alias="OS-FLV-EXT-DATA:ephemeral")
    swap: str | int
    rxtx_factor: float
    is_public: bool = Field(alias="os-flavor-access:is_public")
    disabled: bool = Field(alias="OS-FLV-DISABLED:disabled")


class FlavorIndex(_Out):
    flavors: list[FlavorSummary]


class FlavorDetailIndex(_Out):
    flavors: list[FlavorDetail]


class FlavorShow(_Out):
    flavor: FlavorDetail


class ImageSummary(_Out):
    id: str
    name: str
    links: list[Link]


class ImageDetail(ImageSummary):
    status: str
    progress: int
    minDisk: int
    minRam: int
    metadata: dict[str, str]
    created: str
    updated: str
    size: int = Field(alias="OS-EXT-IMG-SIZE:size")


class ImageIndex(_Out):
    images: list[ImageSummary]


class ImageDetailIndex(_Out):
    images: list[ImageDetail]


class ImageShow(_Out):
    image: ImageDetail


class AbsoluteLimits(_Out):
    maxServerMeta: int
    maxPersonality: int
    maxPersonalitySize: int
    maxTotalInstances: int
    maxTotalCores: int
    maxTotalRAMSize: int
    maxImageMeta: int
    maxTotalKeypairs: int
    maxSecurityGroups: int
    maxSecurityGroupRules: int
    maxServerGroups: int
    maxServerGroupMembers: int
    maxTotalFloatingIps: int
    totalInstancesUsed: int
    totalCoresUsed: int
    totalRAMUsed: int
    totalSecurityGroupsUsed: int
    totalFloatingIpsUsed: int
    totalServerGroupsUsed: int


class LimitsBody(_Out):
    rate: list[dict[str, Any]]
    absolute: AbsoluteLimits


class LimitsShow(_Out):
    limits: LimitsBody


# -- quotas --------------------------------------------------------------------------------

class QuotaSet(_Out):
    id: str
    instances: int
    cores: int
    ram: int
    fixed_ips: int = Field(description="Ports per project (one fixed IP each)")
    floating_ips: int
    metadata_items: int
    injected_files: int
    injected_file_content_bytes: int
    injected_file_path_bytes: int
    key_pairs: int
    security_groups: int
    security_group_rules: int
    server_groups: int
    server_group_members: int


class QuotaSetShow(_Out):
    quota_set: QuotaSet


class QuotaUsage(_Out):
    limit: int
    in_use: int
    reserved: int


class QuotaSetDetail(_Out):
    id: str
    instances: QuotaUsage
    cores: QuotaUsage
    ram: QuotaUsage
    fixed_ips: QuotaUsage
    floating_ips: QuotaUsage
    metadata_items: QuotaUsage
    injected_files: QuotaUsage
    injected_file_content_bytes: QuotaUsage
    injected_file_path_bytes: QuotaUsage
    key_pairs: QuotaUsage
    security_groups: QuotaUsage
    security_group_rules: QuotaUsage
    server_groups: QuotaUsage
    server_group_members: QuotaUsage


class QuotaSetDetailShow(_Out):
    quota_set: QuotaSetDetail


class NetworkQuota(_Out):
    port: int


class NetworkQuotaShow(_Out):
    quota: NetworkQuota


class NetworkQuotaUsage(_Out):
    limit: int
    used: int
    reserved: int


class NetworkQuotaDetail(_Out):
    port: NetworkQuotaUsage


class NetworkQuotaDetailShow(_Out):
    quota: NetworkQuotaDetail
