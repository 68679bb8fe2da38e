"""Domain XML is built with an XML library and checked against golden files.

Regenerate a golden file on purpose with UPDATE_GOLDEN=1 and read the diff.
"""

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from uuid import UUID

import pytest

from agent.adapters.domain_xml import GUEST_AGENT_CHANNEL, METADATA_NS, build_domain_xml
from agent.model.domain import ConsoleSpec, DiskSpec, DomainSpec, InterfaceSpec
from agent.model.host import VirtType

GOLDEN = Path(__file__).parent / "golden"
SERVER = UUID("6f1c2a40-3c1e-4b8e-9d0a-1e2f3a4b5c6d")


def full_spec(**overrides):
    base = dict(
        uuid=SERVER, name="instance-6f1c2a40", virt_type=VirtType.QEMU, vcpus=2, memory_mib=256,
        disks=(DiskSpec(path=Path("/var/lib/compute-agent/instances/x/disk.qcow2")),),
        interfaces=(InterfaceSpec(tap="tap1a2b3c4d-5e", mac="fa:16:3e:00:00:01", mtu=1450),),
        kernel=Path("/img/vmlinuz"), initrd=Path("/img/initrd.img"),
        cmdline="console=ttyS0 root=/dev/vda rw",
        console=ConsoleSpec(socket_path=Path("/run/c.sock"), log_path=Path("/log/c.log")),
        metadata={"server_name": "web-1", "project_id": "p1", "flavor": "m1.tiny"},
    )
    base.update(overrides)
    return DomainSpec(**base)


@pytest.mark.parametrize("case,spec", [
    ("domain_full.xml", full_spec()),
    ("domain_disk_boot_kvm.xml", full_spec(virt_type=VirtType.KVM, kernel=None, initrd=None,
                                           cmdline=None, interfaces=(), console=None, metadata={})),
    ("domain_guest_agent.xml", full_spec(guest_agent=True, interfaces=(), metadata={})),
])
def test_domain_xml_matches_golden_file(case, spec):
    xml = build_domain_xml(spec)
    golden = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(xml)
    assert xml == golden.read_text()


def test_acpi_is_always_on_so_poweroff_powers_off():
    root = ET.fromstring(build_domain_xml(full_spec()))
    assert root.find("features/acpi") is not None


def test_uuid_is_the_server_id_and_type_is_the_virt_decision():
    root = ET.fromstring(build_domain_xml(full_spec()))
    assert root.findtext("uuid") == str(SERVER)
    assert root.get("type") == "qemu"


def test_hostile_metadata_and_names_stay_text():
    evil = "</name><devices><disk/></devices>&'\"$(reboot)"
    root = ET.fromstring(build_domain_xml(full_spec(metadata={evil: evil})))
    [prop] = root.iter(f"{{{METADATA_NS}}}property")
    assert prop.get("name") == evil and prop.text == evil
    assert len(root.findall("devices/disk")) == 1


def test_tap_is_unmanaged_ethernet_with_the_port_mac():
    root = ET.fromstring(build_domain_xml(full_spec()))
    nic = root.find("devices/interface")
    assert nic.get("type") == "ethernet"
    assert nic.find("target").attrib == {"dev": "tap1a2b3c4d-5e", "managed": "no"}
    assert nic.find("mac").get("address") == "fa:16:3e:00:00:01"
    assert nic.find("mtu").get("size") == "1450"


def test_guest_agent_channel_only_when_the_image_declares_one():
    """A virtio channel named as qemu-ga expects it, with no source path (libvirt picks
    the socket); without the image's say-so the guest gets no channel at all."""
    root = ET.fromstring(build_domain_xml(full_spec(guest_agent=True)))
    [channel] = root.findall("devices/channel")
    assert channel.get("type") == "unix" and channel.find("source") is None
    assert channel.find("target").attrib == {"type": "virtio", "name": GUEST_AGENT_CHANNEL}
    assert GUEST_AGENT_CHANNEL == "org.qemu.guest_agent.0"
    assert ET.fromstring(build_domain_xml(full_spec())).findall("devices/channel") == []
