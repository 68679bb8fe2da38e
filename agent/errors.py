"""Errors the core and the adapters raise. The API maps them to OpenStack fault bodies."""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's own errors. The message is safe to show a user: it never
    carries a secret (adminPass, file contents, tokens)."""


class HypervisorError(AgentError):
    """libvirt refused or failed an operation."""


class DomainNotFound(HypervisorError):
    pass


class HypervisorUnavailable(HypervisorError):
    """The connection to libvirtd is down or could not be made."""


class DiskError(AgentError):
    """qemu-img (or the disk layout) failed."""


class ImageNotFound(AgentError):
    pass


class ConfigError(AgentError):
    pass


class ServerNotFound(AgentError):
    pass


class StaleServer(AgentError):
    """A compare-and-set update found the server in another state than expected."""


class StoreError(AgentError):
    """The database could not be read or written (disk full, locked, corrupt)."""
