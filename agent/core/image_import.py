"""Importing a disk file a user brings (a distribution's cloud image, say) into the image
catalog, safely.

A disk image is a program for qemu: a qcow2 can name a backing file or an external data
file anywhere on the host, a vmdk can name extents, and a file that claims to be raw but
holds a qcow2 header becomes a qcow2 the moment anything probes it. So, as Nova's format
inspector (nova/image/format_inspector.py) does, the format is detected from the bytes,
never taken from the name; a declared format must agree with it; only raw and qcow2 with
no file references are taken; a qcow2 must pass `qemu-img check` (a truncated or corrupt
file is refused). The checks run on the copy in the catalog's staging area, so the file
checked is the file published (the source may change under us). Nothing is published
unless every check passes; the manifest is written last, then the folder renamed in.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

from agent.core.validation import check_metadata_items, check_name
from agent.errors import Conflict, InvalidInput
from agent.model.image import Image
from agent.protocols import DiskInspector, ImageWriter

ACCEPTED_FORMATS = ("raw", "qcow2")
GIB = 1024**3

# Magic numbers at offset 0 of formats qemu can open (and so could be tricked into
# opening) that a raw image must not carry. (qemu-img probes these itself; a file whose
# probe fails but whose magic matches is refused here instead of being taken as raw.)
_MAGIC = {
    b"QFI\xfb": "qcow2",
    b"KDMV": "vmdk",
    b"# Disk DescriptorFile": "vmdk",
    b"COWD": "vmdk",
    b"QED\x00": "qed",
    b"vhdxfile": "vhdx",
    b"conectix": "vpc",
    b"LUKS\xba\xbe": "luks",
    b"<<< Oracle VM VirtualBox Disk Image >>>": "vdi",
    b"<<< Sun VirtualBox Disk Image >>>": "vdi",
    b"<<< innotek VirtualBox Disk Image >>>": "vdi",
    b"\x7fVMDK": "vmdk",
}
# qcow2 header fields that point outside the file.
_QCOW2_FILE_REFS = ("data-file", "data-file-raw")


def magic_format(head: bytes) -> str | None:
    """The format the first bytes of a file announce, if any."""
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    return None


def check_disk_info(info: dict[str, Any], head: bytes, declared: str | None,
                    source_name: str) -> str:
    """The image's format, from `qemu-img info --output=json` (format probed) and the
    file's first bytes; InvalidInput naming the reason when the file may not be imported."""
    detected = str(info.get("format", ""))
    if detected == "raw":
        hidden = magic_format(head)
        if hidden:
            raise InvalidInput(f"{source_name} starts like a {hidden} image but qemu-img "
                               f"cannot read it as one (truncated or corrupt?): refused",
                               "file")
    if declared and declared != detected:
        raise InvalidInput(f"{source_name} is declared {declared} but its content is "
                           f"{detected or 'unknown'}: refused (the format is taken from "
                           f"the bytes, not the name)", "disk_format")
    if detected not in ACCEPTED_FORMATS:
        raise InvalidInput(f"{source_name}: format {detected or 'unknown'} is not accepted "
                           f"(only {', '.join(ACCEPTED_FORMATS)}; convert it with "
                           f"`qemu-img convert -O qcow2`)", "file")
    backing = info.get("backing-filename") or info.get("full-backing-filename")
    if backing:
        raise InvalidInput(f"{source_name} has a backing file ({backing}): refused (it "
                           f"would let the guest read a host file; flatten it with "
                           f"`qemu-img convert`)", "file")
    if info.get("encrypted"):
        raise InvalidInput(f"{source_name} is encrypted: refused", "file")
    specific = info.get("format-specific") or {}
    data = specific.get("data") or {}
    if detected == "qcow2":
        refs = [k for k in _QCOW2_FILE_REFS if data.get(k) not in (None, False)]
        if refs:
            raise InvalidInput(f"{source_name} has an external data file "
                               f"({data.get('data-file', 'unnamed')}): refused", "file")
        if data.get("encrypt") or data.get("encryption-format"):
            raise InvalidInput(f"{source_name} is encrypted: refused", "file")
    children = info.get("children") or []
    for child in children:  # qemu 8+: every node qemu would open; only the file itself
        node = (child.get("info") or {}).get("filename")
        if node and child.get("name") not in ("file", None):
            raise InvalidInput(f"{source_name} refers to another file ({node}): refused",
                               "file")
    virtual = info.get("virtual-size")
    if not isinstance(virtual, int) or virtual <= 0:
        raise InvalidInput(f"{source_name}: no virtual size (empty or unreadable)", "file")
    return detected


def check_qcow2_report(report: dict[str, Any], source_name: str) -> None:
    """`qemu-img check --output=json`: any corruption or a cluster past the end of the
    file (a truncated image) refuses it; leaked clusters are harmless."""
    problems = {k: report.get(k, 0) for k in ("corruptions", "check-errors")}
    if any(problems.values()) or report.get("image-end-offset") is None:
        raise InvalidInput(f"{source_name} is truncated or corrupt (qemu-img check: "
                           + ", ".join(f"{k} {v}" for k, v in problems.items())
                           + "): refused", "file")


def min_disk_gib(virtual_size: int) -> int:
    return max(1, math.ceil(virtual_size / GIB))


def import_image(writer: ImageWriter, inspector: DiskInspector, source: Path, name: str,
                 properties: dict[str, str] | None = None, min_ram: int = 0,
                 declared_format: str | None = None) -> Image:
    """Copy `source` into the catalog as a new image named `name`, or refuse it (nothing
    written). Returns the published image."""
    check_name(name, "name")
    props = dict(properties or {})
    check_metadata_items(props)
    if any(image.name == name for image in writer.list()):
        raise Conflict(f"an image named {name!r} already exists")
    if declared_format is not None and declared_format not in ACCEPTED_FORMATS:
        raise InvalidInput(f"disk format {declared_format} is not accepted "
                           f"(only {', '.join(ACCEPTED_FORMATS)})", "disk_format")
    with writer.staging() as staged:
        disk = staged.copy_in(source)
        info = inspector.info(disk)
        fmt = check_disk_info(info, inspector.head(disk), declared_format, source.name)
        if fmt == "qcow2":
            check_qcow2_report(inspector.check(disk, fmt), source.name)
        # The probe is done: from here on the format is fixed and never probed again.
        info = inspector.info(disk, fmt)
        digests = inspector.digests(disk)
        image = Image(uuid=uuid.uuid4(), name=name, disk_file=disk, disk_format=fmt,
                      min_disk=min_disk_gib(int(info["virtual-size"])), min_ram=min_ram,
                      properties=props)
        return staged.publish(image, {**digests, "virtual_size": int(info["virtual-size"])})


def delete_image(writer: ImageWriter, users: list[str], ref: str) -> Image:
    """Remove an image from the catalog unless servers use it (`users`: their ids)."""
    image = writer.get(ref)
    if users:
        raise Conflict(f"image {image.name} is in use by {len(users)} server(s): "
                       + ", ".join(users[:5]))
    writer.remove(image)
    return image
