"""Durable jobs: written with the server change before the API answers, then run
step by step; `step` is the last checkpoint reached, so a restart resumes after it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class JobKind(StrEnum):
    CREATE = "create"
    DELETE = "delete"
    # Server actions (POST /servers/{id}/action); see agent/core/workflows/actions.py.
    REBOOT = "reboot"
    STOP = "stop"
    START = "start"
    SUSPEND = "suspend"
    RESUME = "resume"
    RESCUE = "rescue"
    UNRESCUE = "unrescue"
    RESIZE = "resize"
    CONFIRM_RESIZE = "confirm_resize"
    REVERT_RESIZE = "revert_resize"
    REBUILD = "rebuild"
    CHANGE_PASSWORD = "change_password"  # noqa: S105 - a job kind, not a secret


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # interrupted by a later job (a delete during a build)


class Job(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: UUID
    server_id: UUID
    kind: JobKind
    status: JobStatus = JobStatus.QUEUED
    step: str = ""
    # Inputs the workflow needs after a restart. May hold secrets (a password hash,
    # personality contents): never logged, never returned, cleared once used.
    payload: dict[str, Any] = Field(default_factory=dict, repr=False)
    error: str = ""
    attempts: int = 0
    created_at: datetime
    updated_at: datetime


class StatusEvent(BaseModel):
    """A status change of one server, in the order the store recorded it."""

    model_config = ConfigDict(frozen=True)

    seq: int
    server_id: UUID
    project_id: str
    old_status: str | None
    new_status: str
    power_state: int
    cause: str
    at: datetime
