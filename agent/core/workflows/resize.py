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

import json
import os
from pathlib import Path
from uuid import UUID

from agent.core.workflows.base import WorkflowDeps
from agent.core.workflows.guest_ops import OFF, ON, ActionWorkflow
from agent.core.workflows.rescue import step_index
from agent.errors import AgentError
from agent.model.domain import PowerState
from agent.model.job import Job
from agent.model.server import Server
from agent.model.states import TaskState, VmState

STEPS = ("off", "copied", "swapped", "done")


class ResizeNotRevertable(AgentError):
    """The record of the resize is missing: the old flavor is not known."""


class ResizeFiles:
    def __init__(self, deps: WorkflowDeps, server_id: UUID) -> None:
        files = deps.files(server_id)
        self.disk = files.disk
        self.orig = files.dir / "disk.resize-orig.qcow2"  # the disk before the resize
        self.copy = files.dir / "disk.resized.qcow2"  # the new disk until swapped in
        self.record = files.dir / "resize.json"

    def write_record(self, record: dict[str, object]) -> None:
        tmp = self.record.with_name(self.record.name + ".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True))
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.rename(self.record)

    def read_record(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.record.read_text()))
        except (OSError, ValueError) as e:
            raise ResizeNotRevertable("the record of the resize is missing; the old flavor "
                                      "is not known") from e

    def swap_in(self, new: Path) -> None:
        """`new` becomes the disk; the current disk is kept as `orig` unless it already
        is (each rename is atomic, and a restart redoes only what is left)."""
        if new.exists():
            if not self.orig.exists():
                self.disk.rename(self.orig)
            new.rename(self.disk)


class ResizeWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.RESIZE_PREP})
    done_states = frozenset({VmState.RESIZED})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.RESIZE_PREP)
        new = d.flavors.get(job.payload["new_flavor_id"])
        power_on = bool(job.payload.get("power_on", True))
        rf = ResizeFiles(d, server.id)
        done = step_index(job, STEPS)
        if done < 1:
            await self.ops.power_off(server.id)
            job = await d.checkpoint(job, "off", {"power_state": PowerState.SHUTDOWN, "progress": 25})
        d.ensure_not_taken_over(job, TaskState.RESIZE_PREP)
        if done < 2:
            await d.blocking(d.disks.copy_resized, rf.disk, rf.copy, new.disk)
            rf.write_record({"old_flavor_id": job.payload["old_flavor_id"],
                             "new_flavor_id": new.id, "power_on": power_on})
            job = await d.checkpoint(job, "copied", {"progress": 50})
        d.ensure_not_taken_over(job, TaskState.RESIZE_PREP)
        if done < 3:
            rf.swap_in(rf.copy)
            job = await d.checkpoint(job, "swapped", {"progress": 75})
        await self.ops.define(server, flavor=new)
        if power_on:
            await self.ops.boot(server.id)
        d.ensure_not_taken_over(job, TaskState.RESIZE_PREP)
        await self.done(job, VmState.RESIZED, "resized", flavor_id=new.id, progress=100,
                  power_state=PowerState.RUNNING if power_on else PowerState.SHUTDOWN)

    async def cleanup_after_failure(self, job: Job, server: Server) -> None:
        """Back on the old disk and flavor, off; the copy and the record gone."""
        rf = ResizeFiles(self.deps, server.id)
        await self.ops.destroy(server.id)
        if rf.orig.exists():
            rf.orig.replace(rf.disk)
        rf.copy.unlink(missing_ok=True)
        rf.record.unlink(missing_ok=True)
        await self.ops.define(server)  # server.flavor_id is still the old flavor


class ConfirmResizeWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.RESIZE_CONFIRMING})
    done_states = frozenset({VmState.ACTIVE, VmState.STOPPED})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.RESIZE_CONFIRMING)
        rf = ResizeFiles(d, server.id)
        power = await self.ops.power(server.id)
        d.ensure_not_taken_over(job, TaskState.RESIZE_CONFIRMING)
        rf.orig.unlink(missing_ok=True)
        rf.record.unlink(missing_ok=True)
        await self.done(job, VmState.ACTIVE if power in ON else VmState.STOPPED, "resize confirmed",
                  power_state=power)


class RevertResizeWorkflow(ActionWorkflow):
    kind_tasks = frozenset({TaskState.RESIZE_REVERTING})
    done_states = frozenset({VmState.ACTIVE, VmState.STOPPED})

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.RESIZE_REVERTING)
        rf = ResizeFiles(d, server.id)
        record = rf.read_record()
        old = d.flavors.get(str(record["old_flavor_id"]))
        power_on = bool(record.get("power_on", True))
        await self.ops.destroy(server.id)  # the resized guest goes, as in Nova
        if rf.orig.exists():
            rf.orig.replace(rf.disk)
        await self.ops.define(server, flavor=old)
        if power_on:
            await self.ops.boot(server.id)
        power = await self.ops.power(server.id)
        d.ensure_not_taken_over(job, TaskState.RESIZE_REVERTING)
        await self.done(job, VmState.ACTIVE if power not in OFF else VmState.STOPPED,
                  "resize reverted", flavor_id=old.id, power_state=power)
        rf.record.unlink(missing_ok=True)  # last: a restart before here does it all again
