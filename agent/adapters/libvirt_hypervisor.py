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
import libvirt_qemu  # a separate module of libvirt-python: the QEMU-specific calls

from agent.adapters.domain_xml import METADATA_NS, build_domain_xml
from agent.errors import DomainNotFound, HypervisorError, HypervisorUnavailable
from agent.model.domain import DomainSpec, PowerState

T = TypeVar("T")

# A ping must come back quickly or the agent counts as absent (the caller then takes a
# path without it); a password change gets longer (the guest runs chpasswd). libvirt
# would otherwise wait for an agent command forever.
AGENT_PING_TIMEOUT_S = 5
AGENT_COMMAND_TIMEOUT_S = 30
_GUEST_PING = '{"execute": "guest-ping"}'
# What libvirt says when a guest agent cannot be asked: no channel configured, guest not
# running, nobody listening in the guest, no answer in time, or an error answer.
_AGENT_ABSENT = frozenset({
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED, libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_AGENT_UNSYNCED, libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_INTERNAL_ERROR,
})
# ... and when libvirtd itself went away mid-call.
_CONNECTION_LOST = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC,
                              libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN})

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


def _failure(e: libvirt.libvirtError, message: str) -> HypervisorError:
    """HypervisorUnavailable when the connection itself broke (libvirtd died or restarted
    mid-call: "End of file while reading data", "client socket is closed"), so that a
    caller may wait for libvirtd and ask again; HypervisorError for a refusal."""
    lost = (e.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
            or e.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN))
    return HypervisorUnavailable(message) if lost else HypervisorError(message)


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
            raise _failure(e, e.get_error_message()) from e

    def _call(self, uuid: UUID, what: str, fn: Callable[[libvirt.virDomain], T]) -> T:
        dom = self._domain(uuid)
        try:
            return fn(dom)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain with uuid {uuid}") from e
            raise _failure(e, f"{what} {uuid}: {e.get_error_message()}") from e

    def define(self, spec: DomainSpec) -> None:
        try:
            self.connection().defineXML(build_domain_xml(spec))
        except libvirt.libvirtError as e:
            raise _failure(e, f"define {spec.uuid}: {e.get_error_message()}") from e

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

    # -- the QEMU guest agent -----------------------------------------------------------
    def guest_agent_ready(self, uuid: UUID) -> bool:
        def _ping(d: libvirt.virDomain) -> bool:
            try:
                libvirt_qemu.qemuAgentCommand(d, _GUEST_PING, AGENT_PING_TIMEOUT_S, 0)
            except libvirt.libvirtError as e:
                if e.get_error_code() in _AGENT_ABSENT:
                    return False
                if e.get_error_code() in _CONNECTION_LOST:
                    raise HypervisorUnavailable(f"ping the guest agent of {uuid}: "
                                                f"{e.get_error_message()}") from e
                raise
            return True
        return self._call(uuid, "ping the guest agent of", _ping)

    def set_user_password(self, uuid: UUID, user: str, password_or_hash: str,
                          crypted: bool) -> None:
        """virDomainSetUserPassword: libvirt hands it to the agent's
        guest-set-user-password (base64), never to a log; its errors carry no password."""
        flags = libvirt.VIR_DOMAIN_PASSWORD_ENCRYPTED if crypted else 0

        def _set(d: libvirt.virDomain) -> None:
            d.agentSetResponseTimeout(AGENT_COMMAND_TIMEOUT_S, 0)
            d.setUserPassword(user, password_or_hash, flags)
        self._call(uuid, f"set the password of {user} in", _set)

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
