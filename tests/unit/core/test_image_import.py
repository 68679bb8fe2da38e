"""The importer's checks on what qemu-img reports (Nova's format inspector's rules):
refuse anything that would make a disk read another host file, or whose format is not
what it claims; the real qemu-img runs in tests/integration/test_image_import.py."""

from __future__ import annotations

import pytest

from agent.core.image_import import check_disk_info, check_qcow2_report, min_disk_gib
from agent.errors import InvalidInput

QCOW2 = {"format": "qcow2", "virtual-size": 2 * 1024**3,
         "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}


def test_a_plain_qcow2_and_raw_are_accepted_as_what_they_are():
    assert check_disk_info(QCOW2, b"QFI\xfb\x00\x00\x00\x03", None, "x") == "qcow2"
    raw = {"format": "raw", "virtual-size": 512}
    assert check_disk_info(raw, b"\x00" * 512, "raw", "x") == "raw"


@pytest.mark.parametrize(("info", "reason"), [
    ({**QCOW2, "backing-filename": "/etc/shadow"}, "backing file (/etc/shadow)"),
    ({**QCOW2, "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}}},
     "external data file (/dev/sda)"),
    ({**QCOW2, "encrypted": True}, "encrypted"),
    ({"format": "vmdk", "virtual-size": 1}, "format vmdk is not accepted"),
    ({"format": "raw", "virtual-size": 0}, "no virtual size"),
])
def test_file_references_other_formats_and_empty_disks_are_refused(info, reason):
    with pytest.raises(InvalidInput, match=r"refused|not accepted|no virtual") as e:
        check_disk_info(info, b"\x00" * 8, None, "img")
    assert reason in str(e.value)


def test_a_declared_format_must_match_the_content():
    with pytest.raises(InvalidInput, match="declared raw but its content is qcow2"):
        check_disk_info(QCOW2, b"QFI\xfb", "raw", "disk.raw")


def test_raw_that_starts_with_another_format_s_magic_is_refused():
    for head in (b"QFI\xfb\x00", b"KDMV\x01", b"vhdxfile", b"LUKS\xba\xbe"):
        with pytest.raises(InvalidInput, match="truncated or corrupt"):
            check_disk_info({"format": "raw", "virtual-size": 512}, head, None, "x")


def test_qemu_img_check_errors_refuse_leaks_do_not():
    check_qcow2_report({"leaks": 3, "image-end-offset": 4096}, "x")
    for report in ({"corruptions": 1, "image-end-offset": 1}, {"check-errors": 2},
                   {"image-end-offset": None}):
        with pytest.raises(InvalidInput, match="truncated or corrupt"):
            check_qcow2_report(report, "x")


def test_min_disk_is_the_virtual_size_in_gib_rounded_up():
    assert [min_disk_gib(n) for n in (1, 1024**3, 1024**3 + 1, 10 * 1024**3)] == [1, 1, 2, 10]
