"""In-memory Hypervisor and Disks: what the core asked for, and faults on demand."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from agent.adapters.qemu_img import LocalFiles
from agent.errors import DiskError, DomainNotFound, HypervisorError
from agent.model.domain import DomainSpec, PowerState


class FakeHypervisor:
    def __init__(self) -> None:
        self.domains: dict[UUID, DomainSpec] = {}
        self.states: dict[UUID, PowerState] = {}
        self.calls: list[tuple[str, UUID]] = []
        self.fail_on: dict[str, Exception] = {}  # operation name -> error to raise
        self.saved: set[UUID] = set()  # domains with a managed save image
        self.restored: list[UUID] = []  # starts that resumed from a managed save
        self.acpi_ignored: set[UUID] = set()  # guests that ignore the ACPI power button
        # The guest agent answers in a running guest whose domain has its channel, unless
        # the guest is listed here (agent not installed, not started, hung).
        self.agent_silent: set[UUID] = set()
        self.passwords_set: list[tuple[UUID, str, str, bool]] = []  # (uuid, user, secret, crypted)

    def _maybe_fail(self, op: str, uuid: UUID) -> None:
        self.calls.append((op, uuid))
        if op in self.fail_on:
            raise self.fail_on[op]

    def _known(self, uuid: UUID) -> None:
        if uuid not in self.domains:
            raise DomainNotFound(f"no domain with uuid {uuid}")

    def define(self, spec: DomainSpec) -> None:
        self._maybe_fail("define", spec.uuid)
        self.domains[spec.uuid] = spec
        self.states.setdefault(spec.uuid, PowerState.SHUTDOWN)

    def start(self, uuid: UUID) -> None:
        self._known(uuid)
        self._maybe_fail("start", uuid)
        if self.states[uuid] is PowerState.RUNNING:
            raise HypervisorError("domain is already running")
        if uuid in self.saved:
            self.saved.discard(uuid)
            self.restored.append(uuid)
        self.states[uuid] = PowerState.RUNNING

    def shutdown(self, uuid: UUID) -> None:
        self._known(uuid)
        self._maybe_fail("shutdown", uuid)
        if self.states[uuid] is not PowerState.RUNNING:
            raise HypervisorError("domain is not running")
        if uuid not in self.acpi_ignored:
            self.states[uuid] = PowerState.SHUTDOWN

    def destroy(self, uuid: UUID) -> None:
        self._known(uuid)
        self._maybe_fail("destroy", uuid)
        self.states[uuid] = PowerState.SHUTDOWN

    def undefine(self, uuid: UUID) -> None:
        self._maybe_fail("undefine", uuid)
        self.domains.pop(uuid, None)
        self.states.pop(uuid, None)
        self.saved.discard(uuid)

    def power_state(self, uuid: UUID) -> PowerState:
        self._known(uuid)
        if "power_state" in self.fail_on:
            raise self.fail_on["power_state"]
        return self.states[uuid]

    def managed_save(self, uuid: UUID) -> None:
        self._known(uuid)
        self._maybe_fail("managed_save", uuid)
        if self.states[uuid] is not PowerState.RUNNING:
            raise HypervisorError("domain is not running")
        self.saved.add(uuid)
        self.states[uuid] = PowerState.SHUTDOWN

    def has_managed_save(self, uuid: UUID) -> bool:
        self._known(uuid)
        return uuid in self.saved

    def remove_managed_save(self, uuid: UUID) -> None:
        self._known(uuid)
        self.saved.discard(uuid)

    def _agent_answers(self, uuid: UUID) -> bool:
        return (self.domains[uuid].guest_agent and self.states[uuid] is PowerState.RUNNING
                and uuid not in self.agent_silent)

    def guest_agent_ready(self, uuid: UUID) -> bool:
        self._known(uuid)
        self._maybe_fail("guest_agent_ready", uuid)
        return self._agent_answers(uuid)

    def set_user_password(self, uuid: UUID, user: str, password_or_hash: str,
                          crypted: bool) -> None:
        self._known(uuid)
        self._maybe_fail("set_user_password", uuid)
        if not self._agent_answers(uuid):
            raise HypervisorError("QEMU guest agent is not connected")
        self.passwords_set.append((uuid, user, password_or_hash, crypted))

    def domain_uuids(self) -> set[UUID]:
        return set(self.domains)

    def domain_taps(self, uuid: UUID) -> list[str]:
        self._known(uuid)
        return [nic.tap for nic in self.domains[uuid].interfaces]

    def owned_domains(self, instances_dir: Path) -> dict[UUID, dict[str, str]]:
        return {u: dict(spec.metadata) for u, spec in self.domains.items()
                if spec.metadata and any(d.path.is_relative_to(instances_dir) for d in spec.disks)}


class FakeDisks(LocalFiles):
    """Writes small marker files, so tests can see what exists on disk."""

    def __init__(self) -> None:
        self.fail_on: dict[str, Exception] = {}

    def create_overlay(self, base: Path, base_format: str, dest: Path, size_gib: int) -> None:
        if "create_overlay" in self.fail_on:
            raise self.fail_on["create_overlay"]
        if not base.exists():
            raise DiskError(f"qemu-img create failed: {base} missing")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(f"overlay of {base} size {size_gib}G")

    def copy_resized(self, source: Path, dest: Path, size_gib: int) -> None:
        if "copy_resized" in self.fail_on:
            raise self.fail_on["copy_resized"]
        if not source.exists():
            raise DiskError(f"qemu-img convert failed: {source} missing")
        dest.write_text(f"copy of [{source.read_text()}] size {size_gib}G")

    def cache_base(self, source: Path, dest: Path) -> None:
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())

    def remove_tree(self, path: Path) -> None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
