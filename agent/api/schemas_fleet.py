"""Request bodies of server groups and /os-services, shaped as Nova's v2.1 JSON schemas
(schemas/server_groups.py, schemas/services.py): unknown keys are refused."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from agent.api.schemas import Name
from agent.model.scheduling import GroupPolicy


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerGroupCreate(_Body):
    name: Name
    # One policy in a list, as at 2.1 (a string `policy` only from 2.64). Nova takes the
    # soft ones from 2.15; this API has no microversions, so it takes them at 2.1.
    policies: list[GroupPolicy] = Field(min_length=1, max_length=1)


class ServerGroupCreateBody(_Body):
    server_group: ServerGroupCreate


Text255 = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class ServiceUpdateBody(_Body):
    """PUT /os-services/{enable|disable|disable-log-reason} (Nova before 2.53)."""

    host: Text255
    binary: Text255
    disabled_reason: Text255 | None = None
