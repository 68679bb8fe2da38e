"""Create: injected (the disk made and injected) -> domain (taps plugged, domain
defined) -> started -> running, each step recorded with its progress.

Steps are idempotent given the ones before them, so a restarted daemon resumes after the
last step recorded; the disk and the injection into it count as one unit (a half-injected
disk is made again from its base, never injected twice). Any failure tears the guest down
and leaves the server in ERROR with a fault; nothing half-made stays behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agent.core.injection import BatchGroup, InjectionBatcher
from agent.core.personality import decode_contents
from agent.core.workflows.base import Outcome, Run, Step, StepWorkflow, WorkflowDeps
from agent.core.workflows.guest_ops import ActionTimings, GuestOps
from agent.model.domain import PowerState
from agent.model.image import Image
from agent.model.injection import LOCKED_HASH, InjectedFile, InjectionRequest
from agent.model.job import Job, JobKind
from agent.model.states import VmState
from agent.model.workflows import WORKFLOWS

STEPS = WORKFLOWS[JobKind.CREATE].steps
PROGRESS = {"injected": 40, "domain": 60, "started": 80, "running": 100}


def base_path(deps: WorkflowDeps, image: Image) -> Path:
    size, mtime_ns = deps.disks.fingerprint(image.disk_file)
    # Keyed by content fingerprint: a rebuilt image never changes a base under overlays.
    return deps.base_dir / f"{image.uuid}-{size}-{mtime_ns}.{image.disk_format}"


async def fresh_overlay(deps: WorkflowDeps, image: Image, dest: Path, size_gib: int) -> Path:
    """`dest` made anew as an overlay of the image's cached base (what create, rebuild and
    rescue start a disk from); the base."""
    base = base_path(deps, image)
    await deps.blocking(deps.disks.cache_base, image.disk_file, base)
    await deps.blocking(deps.disks.remove_file, dest)  # a half-made one, or the last
    await deps.blocking(deps.disks.create_overlay, base, image.disk_format, dest, size_gib)
    return base


def injection_request(job: Job, disk: Path, base: Path | None = None,
                      base_format: str = "qcow2") -> InjectionRequest:
    """What the job's payload asks to put into the disk. A password that broke the policy
    locks root instead (the server then ends in ERROR until changePassword)."""
    payload = job.payload
    files = tuple(InjectedFile(path=f["path"], contents=decode_contents(f["contents"], i, 2**31))
                  for i, f in enumerate(payload.get("personality", [])))
    password_hash = payload.get("admin_pass_hash") or LOCKED_HASH
    return InjectionRequest(disk=disk, files=files, root_password_hash=password_hash,
                            authorized_keys=tuple(payload.get("authorized_keys", [])),
                            layout_key=None if base is None else str(base),
                            fresh_overlay_of=base, base_format=base_format)


def batch_group(job: Job) -> BatchGroup | None:
    """The multi-create this build is one of, to be injected with the others; none for a
    resumed build (the others may be past their injection: nobody to wait for). Read at
    the job's start: a step recorded counts tries afresh."""
    batch = job.payload.get("batch")
    if not batch or job.attempts > 1:
        return None
    return BatchGroup(key=batch["key"], size=batch["size"])


class CreateWorkflow(StepWorkflow):
    def __init__(self, deps: WorkflowDeps, injector: InjectionBatcher,
                 timings: ActionTimings | None = None) -> None:
        super().__init__(deps)
        self.injector = injector
        self.ops = GuestOps(deps, timings or ActionTimings())

    def steps(self) -> Mapping[str, Step]:
        return {"injected": self._disk, "domain": self._domain, "started": self._started,
                "running": self._running}

    async def _disk(self, run: Run) -> Outcome:
        """A fresh overlay of the image's base (a half-made or half-injected disk is made
        again), with the payload injected: one unit for a restart."""
        d, image = self.deps, self.deps.images.get(str(run.server.image_id))
        disk = d.files(run.server.id).disk
        with self.injector.on_the_way():  # builds arriving together share an appliance
            base = await fresh_overlay(d, image, disk, d.flavors.get(run.server.flavor_id).disk)
        await self.injector.inject(injection_request(run.job, disk, base, image.disk_format),
                                   batch_group(run.job))
        return Outcome({"progress": PROGRESS["injected"]})

    async def _domain(self, run: Run) -> Outcome:
        d, server = self.deps, run.server
        await d.network.plug_server(server.id)
        # defineXML is idempotent for one uuid; libvirtd may be restarting
        await d.patiently(d.hypervisor.define, self.ops.spec(server))
        return Outcome({"progress": PROGRESS["domain"]})

    async def _started(self, run: Run) -> Outcome:
        if "domain" not in run.done:  # resumed: taps and domain again (a host reboot)
            await self._domain(run)
        await self.ops.start(run.server.id, patient=True)
        return Outcome({"progress": PROGRESS["started"]})

    async def _running(self, run: Run) -> Outcome:
        d = self.deps
        await self.ops.wait_running(run.server.id, patient=True)
        violations = run.job.payload.get("password_violations")
        changes: dict[str, object] = {
            "progress": PROGRESS["running"], "power_state": PowerState.RUNNING,
            "launched_at": d.now(), "task_state": None,
        }
        if violations:
            changes.update(vm_state=VmState.ERROR, fault=d.fault(
                400, "adminPass does not meet the password policy: it needs "
                + ", ".join(violations) + "; root is locked until changePassword"))
        else:
            changes["vm_state"] = VmState.ACTIVE
        return Outcome(changes, cause="build finished")
