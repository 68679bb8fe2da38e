"""Domain XML for libvirt, built with an XML library from a DomainSpec (never by string
formatting, so names and metadata cannot break out of their elements)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agent.model.domain import DomainSpec

METADATA_NS = "https://compute-agent.invalid/xmlns/agent/1"
ET.register_namespace("agent", METADATA_NS)
# The virtio-serial port name the QEMU guest agent listens on in the guest.
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def build_domain_xml(spec: DomainSpec) -> str:
    dom = ET.Element("domain", {"type": spec.virt_type.value})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", str(spec.uuid))
    if spec.metadata:
        meta = _sub(dom, "metadata")
        agent = ET.SubElement(meta, f"{{{METADATA_NS}}}instance")
        # Keys go in an attribute, not a tag name, so any string is safe as a key.
        for key in sorted(spec.metadata):
            _sub(agent, f"{{{METADATA_NS}}}property", spec.metadata[key], name=key)
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _sub(os_el, "kernel", str(spec.kernel))
        if spec.initrd:
            _sub(os_el, "initrd", str(spec.initrd))
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    # Without ACPI a guest's `poweroff` halts without powering off and libvirt's
    # shutdown request (the ACPI power button) is ignored.
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    for disk in spec.disks:
        d = _sub(devices, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type=disk.format, discard="unmap")
        _sub(d, "source", file=str(disk.path))
        _sub(d, "target", dev=disk.target, bus=disk.bus)
    for nic in spec.interfaces:
        i = _sub(devices, "interface", type="ethernet")
        _sub(i, "mac", address=nic.mac)
        _sub(i, "target", dev=nic.tap, managed="no")
        _sub(i, "model", type=nic.model)
        if nic.mtu:
            _sub(i, "mtu", size=str(nic.mtu))
    if spec.console:
        sock = str(spec.console.socket_path)
        serial = _sub(devices, "serial", type="unix")
        _sub(serial, "source", mode="bind", path=sock)
        _sub(serial, "log", file=str(spec.console.log_path), append="off")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="unix")
        _sub(console, "source", mode="bind", path=sock)
        _sub(console, "target", type="serial", port="0")
    if spec.guest_agent:
        # libvirt adds the virtio-serial controller and picks the host-side socket path
        # itself (the agent then talks to it through virDomainSetUserPassword & co).
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    _sub(devices, "memballoon", model="virtio")
    ET.indent(dom, space="  ")
    return ET.tostring(dom, encoding="unicode") + "\n"
