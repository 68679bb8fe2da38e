"""Validated requests the core acts on, independent of the HTTP shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.model.network import NetworkRequest
from agent.model.states import Status


class RequestContext(BaseModel):
    """Who asks. A project sees and touches only its own servers."""

    model_config = ConfigDict(frozen=True)

    project_id: str
    user_id: str
    is_admin: bool = False
    request_id: str = ""


class PersonalityFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    contents: SecretStr  # base64, as given; decoded and checked by the injection rules


class CreateServer(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    image_ref: str
    flavor_ref: str
    admin_pass: SecretStr | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    access_ipv4: str = ""
    access_ipv6: str = ""
    personality: tuple[PersonalityFile, ...] = ()
    shutdown_terminate: bool = False
    # The NICs asked for, in order; None (absent or "auto") means the default networks.
    networks: tuple[NetworkRequest, ...] | None = None
    key_name: str | None = None  # one of the caller's keypairs
    # Multi-create (Nova's min_count/max_count): as many servers as the quota allows up
    # to max_count (None: min_count), none unless at least min_count fit.
    min_count: int = Field(default=1, ge=1)
    max_count: int | None = Field(default=None, ge=1)
    security_groups: tuple[str, ...] = ("default",)  # recorded and shown, not enforced
    scheduler_hints: dict[str, Any] = Field(default_factory=dict)  # kept for a scheduler


# Nova's multi_instance_display_name_template default: web-1, web-2, ...
DEFAULT_NAME_TEMPLATE = "%(name)s-%(count)d"


def multi_instance_name(template: str, name: str, server_id: UUID, count: int) -> str:
    """The name of the `count`-th (from 1) server of a multi-create, as Nova names it."""
    return template % {"name": name, "uuid": str(server_id), "count": count}


def check_name_template(template: str) -> str:
    """ValueError unless the template formats with name, uuid and count (Nova's keys)."""
    try:
        multi_instance_name(template, "x", UUID(int=0), 1)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"multi_instance_display_name_template {template!r} does not format "
                         f"with %(name)s, %(uuid)s and %(count)d: {type(e).__name__} {e}") from None
    return template


class ServerQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    image: str | None = None
    flavor: str | None = None
    name: str | None = None  # a regular expression, searched as Nova does
    statuses: frozenset[Status] = frozenset()  # any of them; empty: every status
    # A status filter was given but names no known status: nothing matches (Nova 2.1).
    status_matches_nothing: bool = False
    changes_since: datetime | None = None
    limit: int | None = Field(default=None, ge=0)
    marker: UUID | None = None
    # Admin only, as in Nova: without all_tenants an admin lists its own project too.
    all_tenants: bool = False
    project_id: str | None = None  # with all_tenants: only this project
    reservation_id: str | None = None  # the servers of one (multi-)create


class Limits(BaseModel):
    """Absolute limits (GET /limits). Per project unless said otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_server_meta: int = Field(default=128, ge=0)
    max_personality: int = Field(default=5, ge=0)
    max_personality_size: int = Field(default=10240, ge=0, description="decoded bytes per file")
    max_total_instances: int = Field(default=10, ge=0)
    max_total_cores: int = Field(default=20, ge=0)
    max_total_ram: int = Field(default=51200, ge=0, description="MiB")
    max_image_meta: int = Field(default=128, ge=0)
    max_total_keypairs: int = Field(default=100, ge=0, description="per user")
    # Neutron's port quota (its default is 500; a host's networks are small: a /24 has
    # 253 addresses, so one project must not be able to take them all).
    max_total_ports: int = Field(default=50, ge=0, description="ports per project")
    # Nova's server group quotas: groups per project, servers per group.
    max_server_groups: int = Field(default=10, ge=0)
    max_server_group_members: int = Field(default=10, ge=0)
