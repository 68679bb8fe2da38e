"""The wired core of tests/unit/core/conftest.py, with the action workflows registered
(short timeouts: a fake guest answers at once or never) and the ServerActions service."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import pytest

from agent.core.actions import ServerActions
from agent.core.workflows.actions import action_workflows
from agent.core.workflows.guest_ops import ActionTimings
from agent.model.server import Server
from agent.model.states import Status, TaskState, VmState
from tests.unit.core.conftest import ALICE, World

TIMINGS = ActionTimings(clean_shutdown_s=0.3, soft_reboot_s=0.3, acpi_retry_s=0.05,
                        running_s=0.5, poll_s=0.01)


@dataclass
class ActionWorld:
    w: World
    actions: ServerActions

    def __getattr__(self, name: str):  # the World's fields: store, hypervisor, ...
        return getattr(self.w, name)

    def server(self, server_id: UUID) -> Server:
        found = self.w.store.get_server(server_id)
        assert found is not None
        return found

    async def active(self, **kw) -> UUID:
        """A server built to ACTIVE."""
        server, _ = await self.w.create(**kw)
        await self.w.runner.idle()
        assert self.server(server.id).status is Status.ACTIVE
        return server.id

    async def settle(self) -> None:
        await self.w.runner.idle()

    async def set_state(self, server_id: UUID, vm_state: VmState, task_state: TaskState | None = None,
                  **changes) -> Server:
        return await self.w.store.update_server(server_id, {"vm_state": vm_state,
                                                      "task_state": task_state, **changes},
                                          cause="test")

    def statuses(self, server_id: UUID) -> list[str]:
        """The status events of the server, in order."""
        return [e.new_status for e in self.w.store.events_since(0) if e.server_id == server_id]


@pytest.fixture
def aw(world: World) -> ActionWorld:
    world.runner.workflows = {**world.runner.workflows,
                              **action_workflows(world.deps, world.batcher, TIMINGS)}
    return ActionWorld(world, ServerActions(world.service))


__all__ = ["ALICE", "TIMINGS", "ActionWorld"]
