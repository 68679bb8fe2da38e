"""The Protocols the core needs. Adapters implement them; tests/unit has fakes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from agent.errors import InjectionError
from agent.model.domain import DomainSpec, PowerState
from agent.model.image import Image
from agent.model.injection import InjectionRequest, InjectionResult
from agent.model.job import Job, StatusEvent
from agent.model.server import Server
from agent.model.states import TaskState, VmState


class ServerExpectation(BaseModel):
    """What a compare-and-set update expects to find."""

    model_config = ConfigDict(frozen=True)

    vm_state: VmState
    task_state: TaskState | None


class Hypervisor(Protocol):
    """Defines, starts and stops guests. Raises DomainNotFound for an unknown uuid."""

    def define(self, spec: DomainSpec) -> None: ...
    def start(self, uuid: UUID) -> None: ...
    def shutdown(self, uuid: UUID) -> None: ...
    def destroy(self, uuid: UUID) -> None: ...
    def undefine(self, uuid: UUID) -> None: ...
    def power_state(self, uuid: UUID) -> PowerState: ...
    def domain_uuids(self) -> set[UUID]: ...
    def owned_domains(self, instances_dir: Path) -> dict[UUID, dict[str, str]]:
        """Domains that carry the agent's metadata and keep a disk under `instances_dir`
        (this agent's, not another agent's on the same libvirtd): uuid -> the metadata
        properties (server_id, project_id, ...)."""
        ...


class Disks(Protocol):
    """Guest disks: copy-on-write overlays on cached base images."""

    def create_overlay(self, base: Path, base_format: str, dest: Path, size_gib: int) -> None: ...
    def virtual_size(self, path: Path) -> int: ...
    def cache_base(self, source: Path, dest: Path) -> None:
        """Copy an image's disk to `dest` (atomically) unless it is already there."""
        ...
    def remove_tree(self, path: Path) -> None:
        """Remove a guest's folder and everything in it; a missing folder is fine."""
        ...


class ImageCatalog(Protocol):
    def list(self) -> list[Image]: ...
    def get(self, ref: str) -> Image: ...


class Store(Protocol):
    """Durable state: servers (soft-deleted rows kept), jobs, status events.

    Every method is one transaction. Any change of a server's status (vm_state/task_state)
    appends a StatusEvent in the same transaction, so the event feed never misses one.
    """

    def create_server(self, server: Server, job: Job) -> None:
        """Insert the server, its first job and a first event (None -> its status)."""
        ...

    def get_server(self, server_id: UUID, project_id: str | None = None) -> Server | None:
        """A server by id, deleted ones included; with project_id, only that project's."""
        ...

    def list_servers(self, project_id: str | None = None, *, changes_since: datetime | None = None,
                     include_deleted: bool = False) -> list[Server]:
        """Newest first (created_at, then id). changes_since implies deleted ones too,
        those with updated_at >= changes_since only."""
        ...

    def count_servers(self, project_id: str | None = None) -> int:
        """Servers not deleted."""
        ...

    def update_server(self, server_id: UUID, changes: dict[str, Any], *, cause: str,
                      expect: ServerExpectation | None = None) -> Server:
        """Apply `changes` (Server field names) and bump updated_at. With `expect`, only
        if the current vm_state/task_state match it, else raise StaleServer (a
        compare-and-set, so two actors never both win). Raises ServerNotFound."""
        ...

    def add_job(self, job: Job, server_changes: dict[str, Any] | None = None, *,
                cause: str = "", expect: ServerExpectation | None = None) -> Server:
        """Insert a job and apply `server_changes` to its server in one transaction
        (e.g. set task_state=deleting with the delete job)."""
        ...

    def get_job(self, job_id: UUID) -> Job | None: ...

    def update_job(self, job_id: UUID, changes: dict[str, Any]) -> Job: ...

    def unfinished_jobs(self) -> list[Job]:
        """Jobs queued or running, oldest first."""
        ...

    def events_since(self, seq: int, project_id: str | None = None,
                     limit: int = 1000) -> list[StatusEvent]: ...

    def close(self) -> None: ...


class DiskInjector(Protocol):
    """Puts personality files and the root password hash into guest disks before first
    boot. One call may cover several disks (one appliance launch for all)."""

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        ...
