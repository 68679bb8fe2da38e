"""A server as the agent stores it. Secrets never live here: the admin password is
only ever carried as a crypt hash inside a job's payload, and only until it is used."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agent.model.domain import PowerState
from agent.model.states import Status, TaskState, VmState, status_of


class Fault(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: int
    message: str
    created: datetime


class Server(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: UUID
    project_id: str
    user_id: str
    name: str
    image_id: UUID
    flavor_id: str
    vm_state: VmState = VmState.BUILDING
    task_state: TaskState | None = TaskState.SPAWNING
    power_state: PowerState = PowerState.NOSTATE
    progress: int = Field(default=0, ge=0, le=100)
    metadata: dict[str, str] = Field(default_factory=dict)
    access_ipv4: str = ""
    access_ipv6: str = ""
    shutdown_terminate: bool = False
    # Shared by the servers one create request made ("r-" and 8 characters, as Nova's).
    reservation_id: str = ""
    # Recorded as asked at create (names); shown in the server's view, not enforced here.
    security_groups: tuple[str, ...] = ("default",)
    # The create's os:scheduler_hints, as given, for a scheduler placing servers on hosts.
    scheduler_hints: dict[str, Any] = Field(default_factory=dict)
    # The keypair named at create (or rebuild) and its public key as it was then: a later
    # delete of the keypair leaves the server's key alone, as in Nova.
    key_name: str | None = None
    key_data: str | None = None
    # The hypervisor host the server is placed on ("" until placed). In single-host mode the
    # agent's own host; in a fleet the controller's placement (issue 12), and hostId from it.
    host: str = ""
    fault: Fault | None = None
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def status(self) -> Status:
        return status_of(self.vm_state, self.task_state)
