"""Create: disk -> injected -> network -> domain -> started -> running, with progress on
each checkpoint.

Steps are idempotent given the ones before them, so a restarted daemon resumes after the
last checkpoint; the disk and the injection into it count as one unit (a half-injected
disk is made again from its base, never injected twice). Any failure tears the guest down
and leaves the server in ERROR with a fault; nothing half-made stays behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

from agent.core.guest_layout import build_domain_spec
from agent.core.injection import BatchGroup, InjectionBatcher
from agent.core.personality import decode_contents
from agent.core.workflows.base import WorkflowDeps
from agent.model.domain import PowerState
from agent.model.image import Image
from agent.model.injection import LOCKED_HASH, InjectedFile, InjectionRequest
from agent.model.job import Job
from agent.model.states import TaskState, VmState

STEPS = ("disk", "injected", "network", "domain", "started", "running")
PROGRESS = {"disk": 20, "injected": 40, "network": 50, "domain": 60, "started": 80, "running": 100}
RUNNING_TIMEOUT_S = 60.0


def base_path(deps: WorkflowDeps, image: Image) -> Path:
    st = image.disk_file.stat()
    # Keyed by content fingerprint: a rebuilt image never changes a base under overlays.
    return deps.base_dir / f"{image.uuid}-{st.st_size}-{st.st_mtime_ns}.{image.disk_format}"


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
    the job's start: a checkpoint counts tries afresh."""
    batch = job.payload.get("batch")
    if not batch or job.attempts > 1:
        return None
    return BatchGroup(key=batch["key"], size=batch["size"])


class CreateWorkflow:
    def __init__(self, deps: WorkflowDeps, injector: InjectionBatcher) -> None:
        self.deps = deps
        self.injector = injector

    async def run(self, job: Job) -> None:
        d = self.deps
        server = d.ensure_not_taken_over(job, TaskState.SPAWNING)
        image = d.images.get(str(server.image_id))
        flavor = d.flavors.get(server.flavor_id)
        files = d.files(server.id)
        done = STEPS.index(job.step) + 1 if job.step in STEPS else 0
        group = batch_group(job)

        if done < 2:
            base = base_path(d, image)
            await d.blocking(d.disks.cache_base, image.disk_file, base)
            files.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            files.disk.unlink(missing_ok=True)  # a half-made or half-injected disk
            await d.blocking(d.disks.create_overlay, base, image.disk_format, files.disk,
                             flavor.disk)
            job = await d.checkpoint(job, "disk", {"progress": PROGRESS["disk"]})
            d.ensure_not_taken_over(job, TaskState.SPAWNING)
            await self.injector.inject(injection_request(job, files.disk, base, image.disk_format),
                                       group)
            job = await d.checkpoint(job, "injected", {"progress": PROGRESS["injected"]})
        d.ensure_not_taken_over(job, TaskState.SPAWNING)

        if done < 5:  # (re)plug until started: idempotent, and taps vanish on a host reboot
            if d.network is not None:
                await d.network.plug_server(server.id)
            if done < 3:
                job = await d.checkpoint(job, "network", {"progress": PROGRESS["network"]})
        d.ensure_not_taken_over(job, TaskState.SPAWNING)

        if done < 5:  # (re)define until started: defineXML is idempotent for one uuid
            spec = build_domain_spec(server.id, image, flavor, files, d.virt_type, metadata={
                "server_id": str(server.id), "project_id": server.project_id,
                "flavor_id": flavor.id, "image_id": str(image.uuid)},
                interfaces=d.network.interfaces(server.id) if d.network is not None else ())
            await d.patiently(d.hypervisor.define, spec)  # libvirtd may be restarting
            if done < 4:
                job = await d.checkpoint(job, "domain", {"progress": PROGRESS["domain"]})
        d.ensure_not_taken_over(job, TaskState.SPAWNING)

        if done < 5:
            await d.patiently(self._start, server.id)
            job = await d.checkpoint(job, "started", {"progress": PROGRESS["started"]})

        await self._wait_running(job)
        d.ensure_not_taken_over(job, TaskState.SPAWNING)
        violations = job.payload.get("password_violations")
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
        await d.checkpoint(job, "running", changes, cause="build finished")

    def _start(self, server_id: UUID) -> None:
        """Start unless running: safe to repeat when a start's answer was lost with
        libvirtd (the domain may have started)."""
        if self.deps.hypervisor.power_state(server_id) is not PowerState.RUNNING:
            self.deps.hypervisor.start(server_id)

    async def _wait_running(self, job: Job) -> None:
        d = self.deps
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUNNING_TIMEOUT_S
        while True:
            state = await d.patiently(d.hypervisor.power_state, job.server_id)
            if state is PowerState.RUNNING:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"guest not running after {RUNNING_TIMEOUT_S:.0f} s "
                                   f"(power state {state.name})")
            await asyncio.sleep(0.2)
