"""Where a guest's files live and what its domain looks like, from image and flavor.

Pure decisions: nothing here touches the disk or libvirt.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from agent.model.domain import ConsoleSpec, DiskSpec, DomainSpec, InterfaceSpec
from agent.model.flavor import Flavor
from agent.model.host import VirtType
from agent.model.image import Image


class InstanceFiles:
    """The files of one guest, all under `<instances_dir>/<uuid>/`."""

    def __init__(self, instances_dir: Path, uuid: UUID) -> None:
        self.dir = instances_dir / str(uuid)
        self.disk = self.dir / "disk.qcow2"
        self.console_socket = self.dir / "console.sock"
        self.console_log = self.dir / "console.log"


def domain_name(uuid: UUID) -> str:
    """libvirt names must be unique per host; the uuid is, and so stays stable."""
    return f"instance-{uuid}"


def build_domain_spec(uuid: UUID, image: Image, flavor: Flavor, files: InstanceFiles,
                      virt_type: VirtType, metadata: dict[str, str] | None = None,
                      interfaces: tuple[InterfaceSpec, ...] = ()) -> DomainSpec:
    return DomainSpec(
        uuid=uuid,
        name=domain_name(uuid),
        virt_type=virt_type,
        vcpus=flavor.vcpus,
        memory_mib=flavor.ram,
        disks=(DiskSpec(path=files.disk, format="qcow2", target="vda",
                        bus=image.properties.get("hw_disk_bus", "virtio")),),
        kernel=image.kernel,
        initrd=image.initrd,
        cmdline=image.cmdline,
        interfaces=interfaces,
        console=ConsoleSpec(socket_path=files.console_socket, log_path=files.console_log),
        metadata=metadata or {},
        guest_agent=image.qemu_guest_agent,
    )
