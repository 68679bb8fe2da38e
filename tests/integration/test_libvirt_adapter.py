"""The libvirt adapter against a real libvirtd: XML round trip, states, idempotent cleanup."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.adapters.domain_xml import METADATA_NS
from agent.errors import DomainNotFound, HypervisorError
from agent.model.domain import ConsoleSpec, DiskSpec, DomainSpec, PowerState


def spec(guest_dir: Path, virt_type, **extra) -> DomainSpec:
    u = uuid.uuid4()
    return DomainSpec(uuid=u, name=f"catest-{u}", virt_type=virt_type, vcpus=1, memory_mib=64,
                      disks=(DiskSpec(path=guest_dir / "disk.qcow2"),),
                      console=ConsoleSpec(socket_path=guest_dir / "c.sock",
                                          log_path=guest_dir / "c.log"),
                      metadata={"server_name": "<web & 'db'>"}, **extra)


def test_defined_domain_round_trips_through_libvirt(hypervisor, created, guest_dir, virt_type):
    s = spec(guest_dir, virt_type)
    hypervisor.define(s)
    created.append(s.uuid)
    root = ET.fromstring(hypervisor.domain_xml(s.uuid))
    assert root.get("type") == virt_type.value
    assert root.findtext("uuid") == str(s.uuid)
    assert root.findtext("name") == s.name
    assert root.find("devices/disk/source").get("file") == str(guest_dir / "disk.qcow2")
    assert root.find("features/acpi") is not None
    assert root.find("devices/serial/source").get("path") == str(guest_dir / "c.sock")
    [prop] = root.iter(f"{{{METADATA_NS}}}property")
    assert prop.get("name") == "server_name" and prop.text == "<web & 'db'>"


def test_defined_but_not_started_is_shutdown(hypervisor, created, guest_dir, virt_type):
    s = spec(guest_dir, virt_type)
    hypervisor.define(s)
    created.append(s.uuid)
    assert s.uuid in hypervisor.domain_uuids()
    assert hypervisor.power_state(s.uuid) is PowerState.SHUTDOWN
    hypervisor.destroy(s.uuid)  # destroying an off domain is fine


def test_undefine_is_idempotent_and_unknown_uuid_is_not_found(hypervisor, created, guest_dir, virt_type):
    s = spec(guest_dir, virt_type)
    hypervisor.define(s)
    created.append(s.uuid)
    hypervisor.undefine(s.uuid)
    hypervisor.undefine(s.uuid)
    assert s.uuid not in hypervisor.domain_uuids()
    with pytest.raises(DomainNotFound):
        hypervisor.power_state(s.uuid)


def test_guest_agent_channel_is_accepted_and_kept_by_libvirt(hypervisor, created, guest_dir, virt_type):
    """libvirt takes the channel as we write it (no path), keeps its target name, and
    picks the host-side socket itself; without the flag the domain has no channel."""
    s = spec(guest_dir, virt_type, guest_agent=True)
    hypervisor.define(s)
    created.append(s.uuid)
    root = ET.fromstring(hypervisor.domain_xml(s.uuid))
    [channel] = root.findall("devices/channel")
    assert channel.get("type") == "unix"
    assert channel.find("target").get("type") == "virtio"
    assert channel.find("target").get("name") == "org.qemu.guest_agent.0"
    assert root.find("devices/controller[@type='virtio-serial']") is not None  # added by libvirt
    plain = spec(guest_dir, virt_type)
    hypervisor.define(plain)
    created.append(plain.uuid)
    assert ET.fromstring(hypervisor.domain_xml(plain.uuid)).findall("devices/channel") == []


def test_the_guest_agent_of_a_guest_that_is_off_is_not_ready(hypervisor, created, guest_dir, virt_type):
    s = spec(guest_dir, virt_type, guest_agent=True)
    hypervisor.define(s)
    created.append(s.uuid)
    assert hypervisor.guest_agent_ready(s.uuid) is False
    with pytest.raises(HypervisorError) as e:
        hypervisor.set_user_password(s.uuid, "root", "$6$salt$hash", crypted=True)
    assert not isinstance(e.value, DomainNotFound) and "$6$salt$hash" not in str(e.value)
    with pytest.raises(DomainNotFound):
        hypervisor.guest_agent_ready(uuid.uuid4())
