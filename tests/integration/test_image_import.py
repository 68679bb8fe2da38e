"""`compute-agent image import` with real qemu-img: a disk file is checked from its bytes
and copied into the catalog atomically, or refused with a message naming the reason and
nothing written (no image folder, no staging leftovers)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.adapters.image_catalog import STAGING_DIR, WritableImageCatalog
from agent.cli import main as cli_main


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def qcow2_with_data(path: Path, size: str = "1536M") -> Path:
    """A qcow2 with some allocated clusters (so a truncation cuts real data)."""
    raw = path.with_suffix(".src")
    with open(raw, "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(0)
        f.write(b"\xab" * (4 * 1024 * 1024))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    qemu_img("resize", str(path), size)
    raw.unlink()
    return path


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    return d


@pytest.fixture
def run_import(catalog_dir: Path, capsys: pytest.CaptureFixture[str]
               ) -> Iterator[Callable[..., tuple[int, str]]]:
    """`compute-agent image import FILE --name NAME ...` in this process: (exit code,
    what it printed). The state dir is short: console socket paths must fit 107 bytes."""
    state = Path(tempfile.mkdtemp(prefix="ca-imp-"))

    def run(file: Path, name: str, *extra: str) -> tuple[int, str]:
        code = cli_main(["--state-dir", str(state), "--image-dir", str(catalog_dir),
                         "image", "import", str(file), "--name", name, *extra])
        out = capsys.readouterr()
        return code, out.out + out.err

    yield run
    shutil.rmtree(state, ignore_errors=True)


def assert_nothing_written(catalog_dir: Path) -> None:
    assert not list(catalog_dir.glob("*/manifest.json"))
    assert [p.name for p in catalog_dir.iterdir() if p.name != STAGING_DIR] == []
    assert not list((catalog_dir / STAGING_DIR).iterdir()) if (catalog_dir / STAGING_DIR).exists() else True


def test_a_qcow2_is_imported_with_its_size_checksum_and_min_disk(tmp_path, catalog_dir, run_import):
    source = qcow2_with_data(tmp_path / "cloud.img")
    code, out = run_import(source, "debian-cloud",
                           "--property", "os_distro=debian", "--min-ram", "256")
    assert code == 0, out
    (manifest_path,) = catalog_dir.glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["name"] == "debian-cloud"
    assert manifest["disk_format"] == "qcow2"  # detected: the name says nothing
    assert manifest["min_disk"] == 2  # 1.5 GiB virtual, rounded up
    assert manifest["min_ram"] == 256
    assert manifest["properties"] == {"os_distro": "debian"}
    disk = manifest_path.parent / manifest["disk_file"]
    assert manifest["size"] == disk.stat().st_size == source.stat().st_size
    assert manifest["checksum"] == hashlib.md5(source.read_bytes(), usedforsecurity=False).hexdigest()
    assert manifest["os_hash_value"] == hashlib.sha512(source.read_bytes()).hexdigest()
    (image,) = WritableImageCatalog(catalog_dir).list()
    assert image.name == "debian-cloud" and image.kernel is None
    assert not list((catalog_dir / STAGING_DIR).iterdir())
    # The same name again is refused.
    code, out = run_import(source, "debian-cloud")
    assert code == 1 and "already exists" in out
    assert len(list(catalog_dir.glob("*/manifest.json"))) == 1


def test_a_raw_disk_is_imported_and_can_be_removed(tmp_path, catalog_dir, run_import):
    source = tmp_path / "disk.raw"
    with open(source, "wb") as f:
        f.truncate(1024**3 + 512)
    code, out = run_import(source, "plain")
    assert code == 0, out
    catalog = WritableImageCatalog(catalog_dir)
    (image,) = catalog.list()
    assert (image.disk_format, image.min_disk) == ("raw", 2)
    catalog.remove(image)
    assert catalog.list() == []
    assert_nothing_written(catalog_dir)


def test_a_qcow2_whose_backing_file_is_a_host_path_is_refused(tmp_path, catalog_dir, run_import):
    host_file = tmp_path / "host-secret.raw"
    host_file.write_bytes(b"secret" * 1000)
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", str(host_file), str(evil), "1G")
    code, out = run_import(evil, "evil")
    assert code == 1
    assert "backing file" in out and str(host_file) in out
    assert_nothing_written(catalog_dir)


def test_a_qcow2_with_an_external_data_file_is_refused(tmp_path, catalog_dir, run_import):
    data = tmp_path / "data.raw"
    evil = tmp_path / "data-file.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={data}", str(evil), "64M")
    code, out = run_import(evil, "evil")
    assert code == 1
    assert "external data file" in out
    assert_nothing_written(catalog_dir)


def test_a_raw_file_that_is_really_qcow2_is_refused(tmp_path, catalog_dir, run_import):
    disguised = tmp_path / "looks-plain.raw"
    qcow2_with_data(disguised, "64M")
    code, out = run_import(disguised, "disguised")
    assert code == 1
    assert "declared raw but its content is qcow2" in out
    assert_nothing_written(catalog_dir)
    # Declared on the command line, whatever the name.
    renamed = disguised.rename(tmp_path / "looks-plain.img")
    code, out = run_import(renamed, "disguised", "--disk-format", "raw")
    assert code == 1 and "declared raw but its content is qcow2" in out
    assert_nothing_written(catalog_dir)


@pytest.mark.parametrize("keep", [0.5, 0.0003], ids=["half", "header-only"])
def test_a_truncated_qcow2_is_refused(tmp_path, catalog_dir, run_import, keep):
    source = qcow2_with_data(tmp_path / "cut.qcow2", "64M")
    size = source.stat().st_size
    with open(source, "r+b") as f:
        f.truncate(max(64, int(size * keep)))
    code, out = run_import(source, "cut")
    assert code == 1
    assert "truncated or corrupt" in out
    assert_nothing_written(catalog_dir)


def test_a_format_other_than_raw_or_qcow2_is_refused(tmp_path, catalog_dir, run_import):
    vmdk = tmp_path / "disk.vmdk"
    qemu_img("create", "-f", "vmdk", str(vmdk), "64M")
    code, out = run_import(vmdk, "vm")
    assert code == 1
    assert "format vmdk is not accepted" in out
    assert_nothing_written(catalog_dir)
