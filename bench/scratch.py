"""One run's scratch space and its clean-up: every disk, domain and temp file the bench
makes lives under one folder, and whatever is left there (including libvirt domains
whose disks are in it) is removed at the end, on an error, and on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt

# QEMU runs unprivileged (libvirt-qemu): guest files must be somewhere it can traverse.
# Short, because a guest's console socket lives under it and a unix socket path has at
# most 107 bytes: <ROOT>/<run>/<daemon>/instances/<uuid>/console.sock must fit.
ROOT = Path("/var/tmp/ca-bench")
LIBVIRT_URI = "qemu:///system"


class Scratch:
    def __init__(self) -> None:
        ROOT.mkdir(mode=0o755, exist_ok=True)
        ROOT.chmod(0o755)
        self.dir = ROOT / secrets.token_hex(3)
        self.dir.mkdir(mode=0o755)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def subdir(self, name: str) -> Path:
        d = self.dir / name
        d.mkdir(mode=0o755, parents=True, exist_ok=True)
        return d

    @contextlib.contextmanager
    def private_dir(self) -> Iterator[Path]:
        """A 0700 folder for secrets (a password file), removed on leaving."""
        d = self.dir / f"private-{secrets.token_hex(4)}"
        d.mkdir(mode=0o700)
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def remove_domains(self) -> list[str]:
        """Destroy and undefine every domain with a disk under this run's folder."""
        removed = []
        try:
            conn = libvirt.open(LIBVIRT_URI)
        except libvirt.libvirtError:
            return removed
        try:
            for dom in conn.listAllDomains(0):
                try:
                    root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314 - libvirt's own XML
                except (libvirt.libvirtError, ET.ParseError):
                    continue  # gone meanwhile
                files = [s.get("file", "") for s in root.iter("source")]
                if not any(f.startswith(str(self.dir) + "/") for f in files):
                    continue
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
                removed.append(dom.name())
        finally:
            conn.close()
        return removed

    def cleanup(self) -> None:
        self.remove_domains()
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            ROOT.rmdir()  # only if no other run is using it


def sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so `finally` blocks clean up."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)

