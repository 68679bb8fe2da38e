"""The Protocols the core needs (the ports of "ports and adapters"; named protocols so as
not to be confused with network ports). Adapters implement them; tests/unit has fakes.

store: the durable state; host: hypervisor, disks, files, images, consoles, injection,
SSH keys; network: bridges, taps, guards, DHCP; messaging: webhooks and the fleet's broker.
"""
from __future__ import annotations

from agent.protocols.host import (
    ConsoleFiles,
    DiskInjector,
    DiskInspector,
    Disks,
    Folders,
    Hypervisor,
    ImageCatalog,
    ImageWriter,
    SshKeys,
    StagedImage,
)
from agent.protocols.messaging import (
    FleetHandler,
    FleetListener,
    FleetPublisher,
    JobBus,
    JobHandler,
    JobTickets,
    WebhookReply,
    WebhookSender,
)
from agent.protocols.network import (
    Dhcp,
    NetPlumber,
    PortGuard,
)
from agent.protocols.store import (
    AGENT_OWNED_SERVER_FIELDS,
    HostRegistry,
    NewServer,
    ServerExpectation,
    Store,
    adopted_server_changes,
    check_change_keys,
    check_expect,
    check_new_server,
    check_task,
    check_ticket,
    job_advanced,
)

__all__ = [
    "AGENT_OWNED_SERVER_FIELDS",
    "ConsoleFiles",
    "Dhcp",
    "DiskInjector",
    "DiskInspector",
    "Disks",
    "FleetHandler",
    "FleetListener",
    "FleetPublisher",
    "Folders",
    "HostRegistry",
    "Hypervisor",
    "ImageCatalog",
    "ImageWriter",
    "JobBus",
    "JobHandler",
    "JobTickets",
    "NetPlumber",
    "NewServer",
    "PortGuard",
    "ServerExpectation",
    "SshKeys",
    "StagedImage",
    "Store",
    "WebhookReply",
    "WebhookSender",
    "adopted_server_changes",
    "check_change_keys",
    "check_expect",
    "check_new_server",
    "check_task",
    "check_ticket",
    "job_advanced",
]
