"""Resize, confirmResize, revertResize (on this host: a resize is a local "migration").

Resize: the guest is shut down; its disk is copied to a new one of the new flavor's size
(qemu-img convert on the same base, then grown); the old disk is kept aside
(`disk.resize-orig.qcow2`) and the copy takes its name, so the domain always boots
`disk.qcow2`; the domain is defined again with the new vCPUs and RAM and started (unless
the server was SHUTOFF) -> VERIFY_RESIZE, the server now showing the new flavor.

What revert needs later (the old flavor, whether the guest ran) is kept in
`resize.json` beside the disks: the folder is the server's, so a delete removes it
with everything else, and it is written before the disks are swapped.

confirmResize removes the old disk; revertResize puts the old disk and flavor back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

from agent.core.workflows.base import Outcome, Run, Step, WorkflowDeps
from agent.core.workflows.guest_ops import OFF, ON, ActionWorkflow
from agent.errors import AgentError
from agent.model.domain import PowerState
from agent.model.job import Job
from agent.model.server import Server
from agent.model.states import VmState


class ResizeNotRevertable(AgentError):
    """The record of the resize is missing: the old flavor is not known."""


class ResizeFiles:
    """The files of a resize, through the Disks port (core does no file I/O itself)."""

    def __init__(self, deps: WorkflowDeps, server_id: UUID) -> None:
        files = deps.files(server_id)
        self.deps = deps
        self.disk = files.disk
        self.orig = files.dir / "disk.resize-orig.qcow2"  # the disk before the resize
        self.copy = files.dir / "disk.resized.qcow2"  # the new disk until swapped in
        self.record = files.dir / "resize.json"

    async def _do(self, fn: Any, *args: Any) -> Any:
        return await self.deps.blocking(fn, *args)

    async def write_record(self, record: dict[str, Any]) -> None:
        await self._do(self.deps.disks.write_record, self.record, record)

    async def read_record(self) -> dict[str, Any]:
        record = await self._do(self.deps.disks.read_record, self.record)
        if record is None:
            raise ResizeNotRevertable("the record of the resize is missing; the old flavor "
                                      "is not known")
        return dict(record)

    async def swap_in(self, new: Path) -> None:
        """`new` becomes the disk; the current disk is kept as `orig` unless it already
        is (each rename is atomic, and a restart redoes only what is left)."""
        disks = self.deps.disks
        if await self._do(disks.exists, new):
            if not await self._do(disks.exists, self.orig):
                await self._do(disks.replace, self.disk, self.orig)
            await self._do(disks.replace, new, self.disk)

    async def put_back_orig(self) -> None:
        if await self._do(self.deps.disks.exists, self.orig):
            await self._do(self.deps.disks.replace, self.orig, self.disk)

    async def remove(self, *paths: Path) -> None:
        for path in paths:
            await self._do(self.deps.disks.remove_file, path)


class ResizeWorkflow(ActionWorkflow):
    def steps(self) -> Mapping[str, Step]:
        return {"off": self._off, "copied": self._copy, "swapped": self._swap, "done": self.run}

    async def _off(self, run: Run) -> Outcome:
        await self.ops.power_off(run.server.id)
        return Outcome({"power_state": PowerState.SHUTDOWN, "progress": 25})

    async def _copy(self, run: Run) -> Outcome:
        d, payload = self.deps, run.job.payload
        rf = ResizeFiles(d, run.server.id)
        new = d.flavors.get(payload["new_flavor_id"])
        await d.blocking(d.disks.copy_resized, rf.disk, rf.copy, new.disk)
        await rf.write_record({"old_flavor_id": payload["old_flavor_id"],
                               "new_flavor_id": new.id,
                               "power_on": bool(payload.get("power_on", True))})
        return Outcome({"progress": 50})

    async def _swap(self, run: Run) -> Outcome:
        rf = ResizeFiles(self.deps, run.server.id)
        await rf.swap_in(rf.copy)
        return Outcome({"progress": 75})

    async def run(self, run: Run) -> Outcome:
        new = self.deps.flavors.get(run.job.payload["new_flavor_id"])
        power_on = bool(run.job.payload.get("power_on", True))
        await self.ops.define(run.server, flavor=new)
        if power_on:
            await self.ops.boot(run.server.id)
        return self.finished(VmState.RESIZED, "resized", flavor_id=new.id, progress=100,
                             power_state=PowerState.RUNNING if power_on else PowerState.SHUTDOWN)

    async def cleanup_after_failure(self, job: Job, server: Server) -> None:
        """Back on the old disk and flavor, off; the copy and the record gone."""
        rf = ResizeFiles(self.deps, server.id)
        await self.ops.destroy(server.id)
        await rf.put_back_orig()
        await rf.remove(rf.copy, rf.record)
        await self.ops.define(server)  # server.flavor_id is still the old flavor


class ConfirmResizeWorkflow(ActionWorkflow):
    async def run(self, run: Run) -> Outcome:
        rf = ResizeFiles(self.deps, run.server.id)
        power = await self.ops.power(run.server.id)
        await rf.remove(rf.orig, rf.record)
        return self.finished(VmState.ACTIVE if power in ON else VmState.STOPPED,
                             "resize confirmed", power_state=power)


class RevertResizeWorkflow(ActionWorkflow):
    """The guest back on its old disk and flavor; the record of the resize is removed in
    the last step, so a restart before it reverts again from the record."""

    def steps(self) -> Mapping[str, Step]:
        return {"reverted": self._revert, "done": self.run}

    async def _revert(self, run: Run) -> Outcome:
        rf = ResizeFiles(self.deps, run.server.id)
        record = await rf.read_record()
        old = self.deps.flavors.get(str(record["old_flavor_id"]))
        await self.ops.destroy(run.server.id)  # the resized guest goes, as in Nova
        await rf.put_back_orig()
        await self.ops.define(run.server, flavor=old)
        if bool(record.get("power_on", True)):
            await self.ops.boot(run.server.id)
        return Outcome({"flavor_id": old.id})

    async def run(self, run: Run) -> Outcome:
        rf = ResizeFiles(self.deps, run.server.id)
        power = await self.ops.power(run.server.id)
        await rf.remove(rf.record)
        return self.finished(VmState.ACTIVE if power not in OFF else VmState.STOPPED,
                             "resize reverted", power_state=power)
