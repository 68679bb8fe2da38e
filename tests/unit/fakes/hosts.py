"""MemoryHostRegistry: the HostRegistry port (the controller's hosts) in memory, for the
scheduler's and the host API's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.errors import HostNotFound
from agent.model.fleet import Heartbeat, HostRecord


class MemoryHostRegistry:
    def __init__(self) -> None:
        self._hosts: dict[str, HostRecord] = {}

    def list_hosts(self) -> list[HostRecord]:
        return [self._hosts[name] for name in sorted(self._hosts)]

    def get_host(self, name: str) -> HostRecord | None:
        return self._hosts.get(name)

    async def record_heartbeat(self, heartbeat: Heartbeat, received_at: datetime) -> HostRecord:
        current = self._hosts.get(heartbeat.host) or HostRecord(name=heartbeat.host)
        new = current.model_copy(update={"heartbeat": heartbeat,
                                         "heartbeat_at": received_at.astimezone(UTC)})
        self._hosts[heartbeat.host] = new
        return new

    async def set_host_enabled(self, name: str, enabled: bool,
                               reason: str | None = None) -> HostRecord:
        current = self._hosts.get(name)
        if current is None:
            raise HostNotFound(f"Host {name} could not be found.")
        new = current.model_copy(update={"enabled": enabled,
                                         "disabled_reason": None if enabled else reason})
        self._hosts[name] = new
        return new
