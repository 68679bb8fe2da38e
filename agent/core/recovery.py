"""Start-up sweep: before any job resumes, remove what the store says is gone, and
quarantine what the store does not know.

Jobs finish or roll back their own work after a restart; this catches the rest, so that
nothing is half-made and forgotten: a domain of ours (our metadata, a disk under our
instances folder) whose server the store says is deleted, the instance folder of a deleted
server, and temp files a killed copy or qemu-img left behind. It runs while no job runs
(before `JobRunner.resume_all`), and never touches a live server's guest nor another
agent's domains on the same libvirtd.

The store keeps a deleted server's row (vm_state deleted) for good: that row is the only
licence to destroy. A domain or folder of ours whose server the store has never heard of
is quarantined instead: an older agent.db restored from a backup, or a corrupt one moved
aside, must not cost those guests their disks. Quarantined things are left exactly as
they are (domain defined and running, disk, taps), logged at error level at every start,
counted in compute_agent_quarantined and listed by `compute-agent doctor`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import structlog

from agent.core.workflows.base import WorkflowDeps
from agent.errors import AgentError
from agent.model.host import CheckResult
from agent.model.states import VmState
from agent.protocols import Folders, Hypervisor

log = structlog.get_logger("agent.recovery")

TEMP_SUFFIX = ".tmp"  # what the Disks adapter writes before an atomic rename
QUARANTINE_FIX = ("restore the agent.db that knows these servers, or, once sure they are not "
                  "needed, remove them by hand (virsh undefine --managed-save UUID; rm -r the folder)")


@dataclass(frozen=True)
class Quarantined:
    """A thing of ours that no server row of the store (live or deleted) accounts for."""

    kind: str  # "domain" or "instance_dir"
    server_id: UUID
    where: str = ""  # the folder's path
    taps: tuple[str, ...] = ()  # a domain's NICs: kept plugged, never handed to a new port

    def describe(self) -> str:
        if self.kind == "domain":
            return f"domain {self.server_id}" + (f" (taps {', '.join(self.taps)})" if self.taps else "")
        return f"instance dir {self.where}"


@dataclass
class SweepReport:
    domains_removed: list[UUID] = field(default_factory=list)
    dirs_removed: list[str] = field(default_factory=list)
    temp_files_removed: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def quarantined_taps(self) -> set[str]:
        return {t for q in self.quarantined for t in q.taps}


def _uuid(name: str) -> UUID | None:
    try:
        return UUID(name)
    except ValueError:
        return None


def _instance_dirs(folders: Folders, instances_dir: Path) -> Iterator[tuple[Path, UUID | None]]:
    """Each entry of the instances folder, with the server uuid it is named after (None: not
    a guest's folder, e.g. the warm appliance's spares, or a file)."""
    for entry, is_dir in folders.entries(instances_dir):
        server_id = _uuid(entry.name)
        yield entry, server_id if server_id is not None and is_dir else None


def _quarantine_domain(hypervisor: Hypervisor, server_id: UUID) -> Quarantined:
    try:
        taps = tuple(hypervisor.domain_taps(server_id))
    except AgentError:  # its taps unknown: still quarantined, the rest of the start goes on
        taps = ()
    return Quarantined("domain", server_id, taps=taps)


def _ours(owned: dict[UUID, dict[str, str]], skip: set[UUID]) -> list[UUID]:
    return sorted(u for u, props in owned.items() if "server_id" in props and u not in skip)


def find_unknown(known: set[UUID], hypervisor: Hypervisor, folders: Folders,
                 instances_dir: Path) -> list[Quarantined]:
    """What of ours the store does not know: the quarantine as it stands now (doctor)."""
    found = [_quarantine_domain(hypervisor, u)
             for u in _ours(hypervisor.owned_domains(instances_dir), known)]
    found += [Quarantined("instance_dir", sid, where=str(entry))
              for entry, sid in _instance_dirs(folders, instances_dir)
              if sid is not None and sid not in known]
    return found


def quarantine_check(known: set[UUID], hypervisor: Hypervisor, folders: Folders,
                     instances_dir: Path) -> CheckResult:
    """doctor's line: a warning naming each quarantined thing (provisioning still works)."""
    found = find_unknown(known, hypervisor, folders, instances_dir)
    if not found:
        return CheckResult(name="quarantine", ok=True, required=False,
                           detail="every domain and instance dir of ours is known to the store")
    return CheckResult(name="quarantine", ok=False, required=False, fix=QUARANTINE_FIX,
                       detail=f"{len(found)} left alone, unknown to the store: "
                              + "; ".join(q.describe() for q in found))


def _log_quarantined(q: Quarantined) -> None:
    where = {"path": q.where} if q.where else {"taps": list(q.taps)}
    log.error("recovery.quarantined", kind=q.kind, server_id=str(q.server_id), **where,
              reason="server unknown to the store: left as it is, not removed")


async def sweep(deps: WorkflowDeps, folders: Folders) -> SweepReport:
    """Remove what the store says is deleted, quarantine what it does not know (see the
    module doc). Never raises for one thing it cannot remove: it logs it, goes on, and
    reports it, so the daemon still starts."""
    report = SweepReport()
    known = {s.id: s for s in deps.store.list_servers(include_deleted=True)}
    live = {i for i, s in known.items() if s.vm_state is not VmState.DELETED}

    try:
        owned = await deps.blocking(deps.hypervisor.owned_domains, deps.instances_dir)
    except AgentError as e:
        owned = {}
        report.errors.append(f"list domains: {e}")
        log.error("recovery.list_domains_failed", error=str(e))
    for uuid in _ours(owned, live):
        if uuid not in known:
            report.quarantined.append(await deps.blocking(_quarantine_domain, deps.hypervisor, uuid))
            continue
        try:
            await deps.tear_down_guest(uuid)
        except AgentError as e:
            report.errors.append(f"domain {uuid}: {e}")
            log.error("recovery.domain_removal_failed", server_id=str(uuid), error=str(e))
            continue
        report.domains_removed.append(uuid)
        log.warning("recovery.orphan_domain_removed", server_id=str(uuid), reason="server deleted")

    for entry, server_id in _instance_dirs(folders, deps.instances_dir):
        if server_id is None:
            log.warning("recovery.unexpected_entry", path=str(entry))  # not ours: left alone
            continue
        if server_id in live:
            _remove_temp_files(folders, entry, report)
            continue
        if server_id not in known:
            report.quarantined.append(Quarantined("instance_dir", server_id, where=str(entry)))
            continue
        try:
            await deps.blocking(deps.disks.remove_tree, entry)
        except AgentError as e:
            report.errors.append(f"instance dir {entry.name}: {e}")
            log.error("recovery.dir_removal_failed", path=str(entry), error=str(e))
            continue
        report.dirs_removed.append(entry.name)
        log.warning("recovery.orphan_dir_removed", server_id=entry.name, reason="server deleted")

    for q in report.quarantined:
        _log_quarantined(q)
    _remove_temp_files(folders, deps.base_dir, report)
    log.info("recovery.swept", domains_removed=len(report.domains_removed),
             dirs_removed=len(report.dirs_removed), quarantined=len(report.quarantined),
             temp_files_removed=len(report.temp_files_removed), errors=len(report.errors))
    return report


def _remove_temp_files(folders: Folders, folder: Path, report: SweepReport) -> None:
    """Half-written files of a killed run (no job runs now, so none is being written)."""
    removed, errors = folders.remove_matching(folder, TEMP_SUFFIX)
    report.errors += errors
    for tmp in removed:
        report.temp_files_removed.append(str(tmp))
        log.warning("recovery.temp_file_removed", path=str(tmp))
