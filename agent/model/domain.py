"""What a guest looks like to the hypervisor, independent of libvirt's XML."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agent.model.host import VirtType


class PowerState(IntEnum):
    """Observed power state, numbered as Nova numbers it (nova.compute.power_state)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class DiskSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    format: str = "qcow2"
    target: str = "vda"
    bus: str = "virtio"


class InterfaceSpec(BaseModel):
    """A NIC plugged into a pre-made tap (os-vif style: libvirt does not manage it)."""

    model_config = ConfigDict(frozen=True)

    tap: str
    mac: str
    mtu: int | None = None
    model: str = "virtio"


class ConsoleSpec(BaseModel):
    """The serial console: a unix socket QEMU listens on, and a log of all output."""

    model_config = ConfigDict(frozen=True)

    socket_path: Path
    log_path: Path


class DomainSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    uuid: UUID
    name: str
    virt_type: VirtType
    vcpus: int = Field(ge=1)
    memory_mib: int = Field(ge=16)
    disks: tuple[DiskSpec, ...]
    interfaces: tuple[InterfaceSpec, ...] = ()
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    console: ConsoleSpec | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # A virtio-serial channel for the QEMU guest agent (the image says it runs one).
    guest_agent: bool = False
