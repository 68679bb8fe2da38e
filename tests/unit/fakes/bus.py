"""RecordingBus: the JobBus port in memory. It records what was published (jobs per host,
snapshot requests) and refuses a job for a host without a queue as AmqpBus does
(JobUnroutable). The real bus is tested against RabbitMQ in tests/integration."""

from __future__ import annotations

import asyncio

from agent.errors import JobUnroutable
from agent.model.fleet import JobMessage, SnapshotRequest
from agent.protocols import JobHandler


class RecordingBus:
    def __init__(self, hosts: set[str] | None = None) -> None:
        self.hosts = hosts  # hosts with a job queue; None: every host has one
        self.jobs: list[tuple[str, JobMessage]] = []
        self.snapshots: list[SnapshotRequest] = []
        self.hold: asyncio.Event | None = None  # set: publishes wait for it (a slow broker)

    async def publish_job(self, host: str, job: JobMessage) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.hosts is not None and host not in self.hosts:
            raise JobUnroutable(f"host {host} has no job queue (compute.{host})")
        self.jobs.append((host, job))

    async def request_snapshot(self, request: SnapshotRequest) -> None:
        self.snapshots.append(request)

    async def consume_jobs(self, handler: JobHandler) -> None:
        raise NotImplementedError("the controller consumes no jobs")
