"""The Hypervisor port on libvirt (libvirt-python)."""

from __future__ import annotations

import contextlib
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import libvirt

from agent.adapters.domain_xml import METADATA_NS, build_domain_xml
from agent.errors import DomainNotFound, HypervisorError, HypervisorUnavailable
from agent.model.domain import DomainSpec, PowerState

T = TypeVar("T")

# libvirt's virDomainState -> our PowerState, as Nova maps them.
_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}


def _agent_metadata(xml: str, instances_dir: Path) -> dict[str, str] | None:
    """The agent's metadata properties of a domain's XML, or None when the domain does
    not carry them or keeps no disk under `instances_dir` (then it is not ours)."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML of a domain, not input
    props = {p.get("name", ""): p.text or ""
             for p in root.iterfind(f"metadata/{{{METADATA_NS}}}instance/{{{METADATA_NS}}}property")}
    if not props:
        return None
    roots = {instances_dir, instances_dir.resolve()}
    disks = [Path(s.get("file", "")) for s in root.iterfind("devices/disk/source")]
    if not any(d.is_relative_to(r) for d in disks for r in roots):
        return None
    return props


def _quiet_libvirt_errors() -> None:
    # libvirt prints every error to stderr by default; we raise them as exceptions.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class LibvirtHypervisor:
    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        _quiet_libvirt_errors()

    # -- connection -------------------------------------------------------------------
    def connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as e:
                    raise HypervisorUnavailable(f"cannot connect to libvirt at {self.uri}: "
                                                f"{e.get_error_message()}") from e
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def version(self) -> str:
        v = self.connection().getLibVersion()
        return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"

    # -- domains ----------------------------------------------------------------------
    def _domain(self, uuid: UUID) -> libvirt.virDomain:
        try:
            return self.connection().lookupByUUIDString(str(uuid))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain with uuid {uuid}") from e
            raise HypervisorError(e.get_error_message()) from e

    def _call(self, uuid: UUID, what: str, fn: Callable[[libvirt.virDomain], T]) -> T:
        dom = self._domain(uuid)
        try:
            return fn(dom)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain with uuid {uuid}") from e
            raise HypervisorError(f"{what} {uuid}: {e.get_error_message()}") from e

    def define(self, spec: DomainSpec) -> None:
        try:
            self.connection().defineXML(build_domain_xml(spec))
        except libvirt.libvirtError as e:
            raise HypervisorError(f"define {spec.uuid}: {e.get_error_message()}") from e

    def domain_xml(self, uuid: UUID) -> str:
        return self._call(uuid, "read XML of", lambda d: d.XMLDesc(0))

    def start(self, uuid: UUID) -> None:
        self._call(uuid, "start", lambda d: d.create())

    def shutdown(self, uuid: UUID) -> None:
        """Ask the guest to power off (ACPI power button)."""
        self._call(uuid, "shut down", lambda d: d.shutdown())

    def destroy(self, uuid: UUID) -> None:
        """Pull the plug. A domain that is already off is fine."""
        def _destroy(d: libvirt.virDomain) -> None:
            if d.isActive():
                try:
                    d.destroy()
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
        self._call(uuid, "destroy", _destroy)

    def undefine(self, uuid: UUID) -> None:
        """Remove the definition (and any managed save image). Unknown uuid is fine."""
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        with contextlib.suppress(DomainNotFound):
            self._call(uuid, "undefine", lambda d: d.undefineFlags(flags))

    def power_state(self, uuid: UUID) -> PowerState:
        state, _reason = self._call(uuid, "read state of", lambda d: d.state())
        return _POWER_STATES.get(state, PowerState.NOSTATE)

    def managed_save(self, uuid: UUID) -> None:
        """Memory to a managed save image, vCPUs freed; the next start restores it."""
        self._call(uuid, "managed save of", lambda d: d.managedSave(0))

    def has_managed_save(self, uuid: UUID) -> bool:
        return bool(self._call(uuid, "read managed save of", lambda d: d.hasManagedSaveImage(0)))

    def remove_managed_save(self, uuid: UUID) -> None:
        def _remove(d: libvirt.virDomain) -> None:
            if d.hasManagedSaveImage(0):
                d.managedSaveRemove(0)
        self._call(uuid, "remove managed save of", _remove)

    def domain_uuids(self) -> set[UUID]:
        try:
            return {UUID(d.UUIDString()) for d in self.connection().listAllDomains(0)}
        except libvirt.libvirtError as e:
            raise HypervisorError(f"list domains: {e.get_error_message()}") from e

    def owned_domains(self, instances_dir: Path) -> dict[UUID, dict[str, str]]:
        try:
            domains = self.connection().listAllDomains(0)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"list domains: {e.get_error_message()}") from e
        found: dict[UUID, dict[str, str]] = {}
        for dom in domains:
            try:
                xml = dom.XMLDesc(0)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined since the listing
                raise HypervisorError(f"read XML of {dom.UUIDString()}: "
                                      f"{e.get_error_message()}") from e
            props = _agent_metadata(xml, instances_dir)
            if props is not None:
                found[UUID(dom.UUIDString())] = props
        return found
