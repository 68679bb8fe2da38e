"""What the scheduler is configured with and what server groups are (issue 12): plain
values the controller's config, store and API share."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class SchedulerSettings(BaseModel):
    """[scheduler]: how far a host's vCPUs, RAM and disk may be overcommitted (Nova's
    defaults: 16 vCPUs per core, 1.5 times the RAM, the disk as it is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_allocation_ratio: float = Field(default=16.0, gt=0, le=1000)
    ram_allocation_ratio: float = Field(default=1.5, gt=0, le=1000)
    disk_allocation_ratio: float = Field(default=1.0, gt=0, le=1000)


class GroupPolicy(StrEnum):
    """Nova's server group policies. The hard ones filter hosts; the soft ones weigh them."""

    AFFINITY = "affinity"  # every member on one host
    ANTI_AFFINITY = "anti-affinity"  # no two members on one host
    SOFT_AFFINITY = "soft-affinity"  # as few hosts as can be
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"  # as many hosts as can be


class ServerGroup(BaseModel):
    """A server group as Nova keeps it: one policy, a project's. Its members are the
    servers (not deleted) created with the scheduler hint {"group": id}: the store derives
    them from the servers, so a member is recorded in the server's own create transaction."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    project_id: str
    user_id: str
    name: str = Field(min_length=1, max_length=255)
    policy: GroupPolicy
    created_at: datetime
    members: tuple[UUID, ...] = ()  # filled by the store when read, oldest first


def group_not_found_message(group_id: object) -> str:
    return f"Instance group {group_id} could not be found."  # Nova's InstanceGroupNotFound
