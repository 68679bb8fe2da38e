"""Response shapes of POST /servers/{id}/action, for the OpenAPI document (tests hold
every body to them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from agent.api import models


class RescueResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adminPass: str


class ConsoleOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: str


class RebuiltServer(models.ServerDetail):
    adminPass: str


class RebuiltServerShow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: RebuiltServer


ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": RescueResult | ConsoleOutput,
          "description": "rescue: the rescue's admin password; os-getConsoleOutput: the "
                         "tail of the serial console's log"},
    202: {"model": RebuiltServerShow,
          "description": "Accepted. rebuild answers with the server and its new adminPass "
                         "(application/json); every other action with an empty body",
          "content": {"text/plain": {"schema": {"type": "string", "maxLength": 0}}}},
    **models.WRITE_ERRORS,
}
