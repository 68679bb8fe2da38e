"""Errors the core and the adapters raise. The API maps them to OpenStack fault bodies."""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's own errors. The message is safe to show a user: it never
    carries a secret (adminPass, file contents, tokens)."""


class NotFound(AgentError):
    """Something named by the request does not exist (or is not the caller's) (-> 404)."""


class ConsoleNotAvailable(NotFound):
    """No serial console for this guest (yet: it has not run on this host): Nova answers 404."""


class HypervisorError(AgentError):
    """libvirt refused or failed an operation."""


class DomainNotFound(HypervisorError):  # an adapter-level fact, not a 404
    pass


class HypervisorUnavailable(HypervisorError):
    """The connection to libvirtd is down or could not be made."""


class DiskError(AgentError):
    """qemu-img (or the disk layout) failed."""


class ImageNotFound(NotFound):
    pass


class ConfigError(AgentError):
    pass


class HostUnfit(ConfigError):
    """The host, as configured, would fail every build (the daemon refuses to start)."""


class ServerNotFound(NotFound):
    pass


class StaleServer(AgentError):
    """A compare-and-set update found the server in another state than expected."""


class TakenOver(StaleServer):
    """A job's step found its server under another task than the job's own (a later job,
    a delete, took it over): nothing was recorded, and the job stops."""


class StoreError(AgentError):
    """The database could not be read or written (disk full, locked, corrupt)."""


class StateDirLocked(AgentError):
    """Another compute-agent holds the state dir's lock (one daemon per state dir)."""


class FlavorNotFound(NotFound):
    pass


class MetadataItemNotFound(NotFound):
    pass


class InvalidInput(AgentError):
    """Bad input (-> 400). `field` names the offending field of the request."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class QuotaExceeded(AgentError):
    """A per-project limit would be exceeded (-> 403, as Nova answers quota errors)."""


class PolicyForbidden(AgentError):
    """The caller may not do this (an admin-only option, say) (-> 403)."""


class OverLimit(AgentError):
    """A request is larger than the agent accepts (-> 413)."""


class JobAbandoned(AgentError):
    """A job was started too often without finishing (the daemon died under it)."""


class InjectionError(AgentError):
    """Files or the password could not be put into the guest disk."""


class NetworkNotFound(NotFound):
    pass


class PortNotFound(NotFound):
    pass


class Conflict(AgentError):
    """The request conflicts with what exists (-> 409)."""


class IpAddressInUse(Conflict):
    pass


class MacAddressInUse(Conflict):
    pass


class PortQuotaExceeded(Conflict):
    """The project has all the ports its quota allows (-> 409, Neutron's OverQuota)."""


class PortInUse(Conflict):
    """The port is bound to a server already."""


class NoMoreAddresses(Conflict):
    """No free address left on the network."""


class NetworkError(AgentError):
    """A bridge, tap or VLAN interface could not be made or changed (netlink)."""


class DhcpError(NetworkError):
    """dnsmasq could not be started, reloaded or stopped."""


class KeypairNotFound(NotFound):
    pass


class KeypairExists(Conflict):
    """The user has a keypair of that name already (-> 409)."""


class Unroutable(AgentError):
    """The broker returned a mandatory message: no queue is bound for it. Nothing was
    queued."""


class JobUnroutable(Unroutable):
    """A job for a host that has no job queue (unknown, or its agent never started)."""


class BusClosed(AgentError):
    """The broker connection was closed by the agent itself (shutdown): nothing more is
    published."""


class ControllerUnavailable(AgentError):
    """The fleet's controller could not give a job's ticket now (unreachable, timed out,
    refused our token, a 5xx, an invalid answer): the job is taken again later."""


class ServerGroupNotFound(NotFound):
    """A server group that does not exist (or is another project's) (-> 404)."""


class HostNotFound(NotFound):
    """A hypervisor host the controller has never heard of (issue 12)."""


class JobNotFound(NotFound):
    """A job ticket the controller does not have for that host (issue 12)."""


class NoValidHost(AgentError):
    """The scheduler found no host for a server: it ends in ERROR with Nova's fault."""

    MESSAGE = "No valid host was found. "

    def __init__(self, reason: str = "There are not enough hosts available.") -> None:
        super().__init__(self.MESSAGE + reason)
