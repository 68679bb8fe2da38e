"""Images come from manifests; paths are relative to the manifest; broken ones are skipped."""

import json
import uuid

import pytest

from agent.adapters.image_catalog import ManifestImageCatalog
from agent.errors import ImageNotFound

UUID = "0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"


def write_manifest(folder, **extra):
    folder.mkdir(parents=True)
    data = {"uuid": UUID, "name": "busybox-test", "disk_file": "disk.qcow2",
            "disk_format": "qcow2", "kernel": "vmlinuz", "initrd": "initrd.img",
            "cmdline": "console=ttyS0", "min_disk": 1, "min_ram": 64,
            "properties": {"os_type": "linux"}, "test_login": {"user": "root", "password": "x"},
            **extra}
    (folder / "manifest.json").write_text(json.dumps(data))


def test_loads_manifest_with_paths_relative_to_it(tmp_path):
    write_manifest(tmp_path / "busybox-test")
    [image] = ManifestImageCatalog(tmp_path).list()
    assert image.uuid == uuid.UUID(UUID)
    assert image.disk_file == tmp_path / "busybox-test" / "disk.qcow2"
    assert image.kernel == tmp_path / "busybox-test" / "vmlinuz"
    assert image.properties == {"os_type": "linux"}
    assert not hasattr(image, "test_login")


def test_size_is_the_disk_file_s_now_and_zero_without_one(tmp_path):
    write_manifest(tmp_path / "busybox-test", size=99)
    assert ManifestImageCatalog(tmp_path).list()[0].size == 0  # no disk file
    (tmp_path / "busybox-test" / "disk.qcow2").write_bytes(b"x" * 1234)
    assert ManifestImageCatalog(tmp_path).list()[0].size == 1234


def test_get_by_uuid_or_name_and_not_found(tmp_path):
    write_manifest(tmp_path / "busybox-test")
    catalog = ManifestImageCatalog(tmp_path)
    assert catalog.get(UUID).name == "busybox-test"
    assert catalog.get("busybox-test").uuid == uuid.UUID(UUID)
    with pytest.raises(ImageNotFound):
        catalog.get("nope")


def test_broken_manifest_hides_only_itself(tmp_path):
    write_manifest(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    assert [i.name for i in ManifestImageCatalog(tmp_path).list()] == ["busybox-test"]


def test_boot_files_are_served_from_the_agents_cache(tmp_path):
    write_manifest(tmp_path / "images" / "busybox-test")
    (tmp_path / "images" / "busybox-test" / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "images" / "busybox-test" / "initrd.img").write_bytes(b"initrd")
    cache = tmp_path / "cache"
    image = ManifestImageCatalog(tmp_path / "images", boot_cache=cache).get(UUID)
    assert image.kernel.parent == cache and image.kernel.read_bytes() == b"kernel"
    assert image.initrd.parent == cache and image.initrd.read_bytes() == b"initrd"
    assert image.kernel.stat().st_mode & 0o777 == 0o644
    again = ManifestImageCatalog(tmp_path / "images", boot_cache=cache).get(UUID)
    assert again.kernel == image.kernel  # cached once, keyed by fingerprint


@pytest.mark.parametrize("value,declared", [
    ("yes", True), ("True", True), ("1", True), ("on", True),
    ("no", False), ("false", False), ("", False), ("yes please", False),
])
def test_guest_agent_is_the_glance_property_read_as_a_flexible_boolean(tmp_path, value, declared):
    """`hw_qemu_guest_agent` in the manifest's properties, read as Nova reads it."""
    write_manifest(tmp_path / "img", properties={"hw_qemu_guest_agent": value})
    [image] = ManifestImageCatalog(tmp_path).list()
    assert image.qemu_guest_agent is declared
    assert image.properties["hw_qemu_guest_agent"] == value  # still shown as the user set it


def test_an_image_without_the_property_has_no_guest_agent(tmp_path):
    write_manifest(tmp_path / "img")
    [image] = ManifestImageCatalog(tmp_path).list()
    assert image.qemu_guest_agent is False
