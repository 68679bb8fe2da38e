"""This host's machinery: the hypervisor, disks and files, images, console logs,
injection into guest disks, SSH keys."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from agent.errors import InjectionError
from agent.model.domain import DomainSpec, PowerState
from agent.model.image import Image
from agent.model.injection import InjectionRequest, InjectionResult
from agent.model.keypair import GeneratedKey


class Hypervisor(Protocol):
    """Defines, starts and stops guests. Raises DomainNotFound for an unknown uuid."""

    def define(self, spec: DomainSpec) -> None: ...
    def start(self, uuid: UUID) -> None: ...
    def shutdown(self, uuid: UUID) -> None: ...
    def destroy(self, uuid: UUID) -> None: ...
    def undefine(self, uuid: UUID) -> None: ...
    def power_state(self, uuid: UUID) -> PowerState: ...
    def managed_save(self, uuid: UUID) -> None:
        """Save the running guest's memory to disk and stop it (libvirt managed save);
        the next start() restores it."""
        ...
    def has_managed_save(self, uuid: UUID) -> bool: ...
    def remove_managed_save(self, uuid: UUID) -> None:
        """Drop a managed save image (none is fine): the next start() boots afresh."""
        ...
    def domain_uuids(self) -> set[UUID]: ...
    def owned_domains(self, instances_dir: Path) -> dict[UUID, dict[str, str]]:
        """Domains that carry the agent's metadata and keep a disk under `instances_dir`
        (this agent's, not another agent's on the same libvirtd): uuid -> the metadata
        properties (server_id, project_id, ...)."""
        ...
    def domain_taps(self, uuid: UUID) -> list[str]:
        """The host tap devices the domain's NICs use, in order."""
        ...
    def guest_agent_ready(self, uuid: UUID) -> bool:
        """The guest's QEMU guest agent answers a ping within a few seconds. False when
        it does not (no channel, guest off, agent not installed or not running);
        DomainNotFound and HypervisorUnavailable still raise."""
        ...
    def set_user_password(self, uuid: UUID, user: str, password_or_hash: str,
                          crypted: bool) -> None:
        """Set a user's password in the running guest through its guest agent (which
        runs the guest's chpasswd); `crypted`: it is a crypt hash, as the guest's shadow
        file keeps it. HypervisorError when the agent or the guest refuses."""
        ...


class Disks(Protocol):
    """Guest disks: copy-on-write overlays on cached base images."""

    def create_overlay(self, base: Path, base_format: str, dest: Path, size_gib: int) -> None: ...
    def copy_resized(self, source: Path, dest: Path, size_gib: int) -> None:
        """Copy a guest disk to `dest` (same backing file, if any), grown to `size_gib`
        when that is larger (0 keeps its size); atomically, like create_overlay."""
        ...
    def cache_base(self, source: Path, dest: Path) -> None:
        """Copy an image's disk to `dest` (atomically) unless it is already there."""
        ...
    def remove_tree(self, path: Path) -> None:
        """Remove a guest's folder and everything in it; a missing folder is fine."""
        ...
    def fingerprint(self, path: Path) -> tuple[int, int]:
        """(size, mtime in ns) of a file: what a cached base is keyed by."""
        ...
    def exists(self, path: Path) -> bool: ...
    def remove_file(self, path: Path) -> None:
        """Remove a file; a missing one is fine."""
        ...
    def replace(self, source: Path, dest: Path) -> None:
        """Rename `source` to `dest` (atomically, replacing it)."""
        ...
    def write_record(self, path: Path, record: dict[str, Any]) -> None:
        """A small JSON record, written to a temp name, fsynced and renamed."""
        ...
    def read_record(self, path: Path) -> dict[str, Any] | None:
        """The record, or None when it is missing or unreadable."""
        ...


class Folders(Protocol):
    """The agent's own folders (instances, base images), as the start-up sweep reads and
    cleans them."""

    def entries(self, folder: Path) -> list[tuple[Path, bool]]:
        """The folder's entries by name, each with whether it is a folder; [] when
        `folder` is not a folder."""
        ...
    def remove_matching(self, folder: Path, suffix: str) -> tuple[list[Path], list[str]]:
        """Remove the files in `folder` whose names end in `suffix` (none is fine): those
        removed, and one message for each that could not be."""
        ...


class ConsoleFiles(Protocol):
    """A guest's serial console on this host: QEMU's unix socket and virtlogd's log of it.
    ConsoleNotAvailable when the guest has none."""

    def socket_path(self, server_id: UUID) -> Path: ...
    def log_tail(self, server_id: UUID, max_bytes: int) -> bytes:
        """At most the last `max_bytes` of the console log (only those are read)."""
        ...


class ImageCatalog(Protocol):
    def list(self) -> list[Image]: ...
    def get(self, ref: str) -> Image: ...


class StagedImage(Protocol):
    """An image being imported: a folder in the catalog's staging area, invisible to
    list() and get() until published; removed when its `staging()` block ends unpublished."""

    def copy_in(self, source: Path) -> Path:
        """Copy the disk file into the staged folder; the copy's path. InvalidInput (field
        "file") when `source` is not a regular file or cannot be read."""
        ...
    def publish(self, image: Image, extra: dict[str, Any]) -> Image:
        """Write the manifest (last, fsynced; with the disk's size in bytes beside `extra`),
        then rename the folder into the catalog."""
        ...


class ImageWriter(ImageCatalog, Protocol):
    """A catalog that images can be added to and removed from."""

    def staging(self) -> AbstractContextManager[StagedImage]: ...
    def remove(self, image: Image) -> None:
        """Take the image out of the catalog (its folder renamed away, then deleted)."""
        ...


class DiskInspector(Protocol):
    """What qemu-img says about a disk file, without trusting it."""

    def info(self, path: Path, fmt: str | None = None) -> dict[str, Any]:
        """`qemu-img info --output=json`; the format probed unless `fmt` is given.
        InvalidInput when qemu-img cannot read it."""
        ...
    def check(self, path: Path, fmt: str) -> dict[str, Any]:
        """`qemu-img check --output=json` (the report, also when it finds errors)."""
        ...
    def head(self, path: Path) -> bytes:
        """The file's first bytes (enough for any format's magic number)."""
        ...
    def digests(self, path: Path) -> dict[str, str]:
        """`checksum` (MD5, as Glance keeps it), `os_hash_algo` and `os_hash_value`."""
        ...



class SshKeys(Protocol):
    """SSH keys: new RSA keys made, and public keys read and fingerprinted. Never logs
    a private key."""

    def generate(self) -> GeneratedKey:
        """A new ssh-rsa key (2048 bits, as Nova makes them at 2.1)."""
        ...

    def fingerprint(self, public_key: str) -> str:
        """Nova's fingerprint of an OpenSSH public key line (MD5 of the key blob as
        colon-separated hex pairs); ValueError when the text is not such a key."""
        ...


class DiskInjector(Protocol):
    """Puts personality files and the root password hash into guest disks before first
    boot. One call may cover several disks (one appliance launch for all)."""

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        ...
