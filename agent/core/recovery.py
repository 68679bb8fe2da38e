"""Start-up sweep: before any job resumes, remove what no live server owns.

Jobs finish or roll back their own work after a restart; this catches the rest, so that
nothing is half-made and forgotten: a domain of ours (our metadata, a disk under our
instances folder) whose server is deleted or unknown to the store, an instance folder
without a live server, and temp files a killed copy or qemu-img left behind. It runs
while no job runs (before `JobRunner.resume_all`), and never touches a live server's
guest nor another agent's domains on the same libvirtd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import structlog

from agent.core.workflows.base import WorkflowDeps
from agent.errors import AgentError
from agent.model.states import VmState

log = structlog.get_logger("agent.recovery")

TEMP_SUFFIX = ".tmp"  # what the Disks adapter writes before an atomic rename


@dataclass
class SweepReport:
    domains_removed: list[UUID] = field(default_factory=list)
    dirs_removed: list[str] = field(default_factory=list)
    temp_files_removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _uuid(name: str) -> UUID | None:
    try:
        return UUID(name)
    except ValueError:
        return None


async def sweep(deps: WorkflowDeps) -> SweepReport:
    """Remove orphans (see the module doc). Never raises for one thing it cannot remove:
    it logs it, goes on, and reports it, so the daemon still starts."""
    report = SweepReport()
    known = {s.id: s for s in deps.store.list_servers(include_deleted=True)}
    live = {i for i, s in known.items() if s.vm_state is not VmState.DELETED}

    try:
        owned = await deps.blocking(deps.hypervisor.owned_domains, deps.instances_dir)
    except AgentError as e:
        owned = {}
        report.errors.append(f"list domains: {e}")
        log.error("recovery.list_domains_failed", error=str(e))
    for uuid, props in owned.items():
        if "server_id" not in props or uuid in live:
            continue
        why = "server deleted" if uuid in known else "server unknown"
        try:
            await deps.tear_down_guest(uuid)
        except AgentError as e:
            report.errors.append(f"domain {uuid}: {e}")
            log.error("recovery.domain_removal_failed", server_id=str(uuid), error=str(e))
            continue
        report.domains_removed.append(uuid)
        log.warning("recovery.orphan_domain_removed", server_id=str(uuid), reason=why)

    entries = sorted(deps.instances_dir.iterdir()) if deps.instances_dir.is_dir() else []
    for entry in entries:
        server_id = _uuid(entry.name)
        if server_id is None or not entry.is_dir():
            log.warning("recovery.unexpected_entry", path=str(entry))  # not ours: left alone
            continue
        if server_id in live:
            _remove_temp_files(entry, report)
            continue
        try:
            await deps.blocking(deps.disks.remove_tree, entry)
        except AgentError as e:
            report.errors.append(f"instance dir {entry.name}: {e}")
            log.error("recovery.dir_removal_failed", path=str(entry), error=str(e))
            continue
        report.dirs_removed.append(entry.name)
        log.warning("recovery.orphan_dir_removed", server_id=entry.name,
                    reason="server deleted" if server_id in known else "server unknown")

    if deps.base_dir.is_dir():
        _remove_temp_files(deps.base_dir, report)
    log.info("recovery.swept", domains_removed=len(report.domains_removed),
             dirs_removed=len(report.dirs_removed),
             temp_files_removed=len(report.temp_files_removed), errors=len(report.errors))
    return report


def _remove_temp_files(folder: Path, report: SweepReport) -> None:
    """Half-written files of a killed run (no job runs now, so none is being written)."""
    for tmp in folder.glob(f"*{TEMP_SUFFIX}"):
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            report.errors.append(f"{tmp}: {e.strerror}")
            continue
        report.temp_files_removed.append(str(tmp))
        log.warning("recovery.temp_file_removed", path=str(tmp))
