"""Response bodies as Nova shapes them (nova/api/openstack/compute/views/*), as dicts.
No view ever holds a secret: adminPass is added by the create handler alone."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID

from starlette.requests import Request

from agent.core.guest_layout import domain_name
from agent.core.quotas import Usage
from agent.model.flavor import Flavor
from agent.model.image import Image
from agent.model.keypair import Keypair
from agent.model.requests import Limits
from agent.model.server import Server
from agent.model.states import Status

# Images have no dates of their own in the catalog: a fixed one, as Nova's fakes have.
IMAGE_TIMESTAMP = "2011-01-01T01:02:03Z"
AVAILABILITY_ZONE = "nova"
DEFAULT_SECURITY_GROUPS = ["default"]
_FAULT_STATUSES = frozenset({Status.ERROR, Status.DELETED})


def isotime(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_time(dt: datetime | None) -> str | None:
    """OS-SRV-USG times, as Nova shows them: microseconds, no zone (UTC)."""
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def host_id(project_id: str, host: str) -> str:
    """Nova's hostId: unique per project (account) and host, not globally."""
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def host_of(server: Server, host: str) -> str:
    """The server's host, or "" while it has none. In a fleet, the host it is placed on
    (Server.host: the controller's placement, which the agent adopts). On a single host,
    this host (`host`) once the build reached its first checkpoint (or the server was ever
    launched), as Nova's instance.host is unset until the compute host takes the build: a
    build that failed before has no host."""
    if server.host:
        return server.host
    return host if server.launched_at is not None or server.progress > 0 else ""


def canonical_ip(value: str) -> str:
    """An address as Nova shows it (IPv6 compressed); older rows may hold another form."""
    try:
        return str(ipaddress.ip_address(value)) if value else ""
    except ValueError:
        return value


def admin_attributes(server: Server, host: str) -> dict[str, Any]:
    """OS-EXT-SRV-ATTR at 2.1 (host, node, instance name), shown to admins only as Nova's
    default policy has it; the node is this host, the instance name its libvirt domain."""
    placed = host_of(server, host) or None
    return {"OS-EXT-SRV-ATTR:host": placed, "OS-EXT-SRV-ATTR:hypervisor_hostname": placed,
            "OS-EXT-SRV-ATTR:instance_name": domain_name(server.id)}


def security_groups_view(names: Iterable[str]) -> list[dict[str, str]]:
    return [{"name": name} for name in names]


class Urls:
    """Links as Nova builds them: the project id appears in them only when the request
    URL carried it (/v2.1/{project_id}/...)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.base = str(request.base_url).rstrip("/")
        project = request.path_params.get("project_id")
        self.project = f"/{quote(project, safe='')}" if project else ""

    def self_href(self, collection: str, item: object) -> str:
        return f"{self.base}/v2.1{self.project}/{collection}/{quote(str(item), safe='')}"

    def bookmark_href(self, collection: str, item: object) -> str:
        return f"{self.base}{self.project}/{collection}/{quote(str(item), safe='')}"

    def links(self, collection: str, item: object) -> list[dict[str, str]]:
        return [{"rel": "self", "href": self.self_href(collection, item)},
                {"rel": "bookmark", "href": self.bookmark_href(collection, item)}]

    def next_link(self, last_id: UUID) -> list[dict[str, str]]:
        """The request's own URL with the marker moved to the last item shown."""
        params = [(k, v) for k, v in self.request.query_params.multi_items() if k != "marker"]
        params.append(("marker", str(last_id)))
        return [{"rel": "next", "href": str(self.request.url.replace(query=urlencode(params)))}]


# -- servers -----------------------------------------------------------------------------

def server_summary(server: Server, urls: Urls) -> dict[str, Any]:
    return {"id": str(server.id), "name": server.name, "links": urls.links("servers", server.id)}


def server_detail(server: Server, urls: Urls, host: str,
                  addresses: dict[str, list[dict[str, Any]]] | None = None, *,
                  admin: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(server.id),
        "name": server.name,
        "status": server.status.value,
        "tenant_id": server.project_id,
        "user_id": server.user_id,
        "metadata": dict(server.metadata),
        "hostId": host_id(server.project_id, host_of(server, host)),
        "image": {"id": str(server.image_id),
                  "links": [{"rel": "bookmark", "href": urls.bookmark_href("images", server.image_id)}]},
        "flavor": {"id": server.flavor_id,
                   "links": [{"rel": "bookmark", "href": urls.bookmark_href("flavors", server.flavor_id)}]},
        "created": isotime(server.created_at),
        "updated": isotime(server.updated_at),
        "addresses": addresses or {},
        "accessIPv4": canonical_ip(server.access_ipv4),
        "accessIPv6": canonical_ip(server.access_ipv6),
        "links": urls.links("servers", server.id),
        "progress": server.progress,
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-STS:vm_state": server.vm_state.value,
        "OS-EXT-STS:task_state": server.task_state.value if server.task_state else None,
        "OS-EXT-STS:power_state": int(server.power_state),
        "OS-EXT-AZ:availability_zone": AVAILABILITY_ZONE,
        "OS-SRV-USG:launched_at": usage_time(server.launched_at),
        "OS-SRV-USG:terminated_at": usage_time(server.deleted_at),
        "key_name": server.key_name,
        "config_drive": "",
        "security_groups": security_groups_view(dict.fromkeys(server.security_groups)),
        "os-extended-volumes:volumes_attached": [],
    }
    if admin:
        body.update(admin_attributes(server, host))
    if server.fault is not None and server.status in _FAULT_STATUSES:
        body["fault"] = {"code": server.fault.code, "message": server.fault.message,
                         "created": isotime(server.fault.created)}
    return body


def to_json(value: object) -> str:
    """JSON text as Starlette's JSONResponse renders it (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def created_server(server: Server, urls: Urls, admin_pass: str,
                   asked_groups: list[str] | None = None) -> dict[str, Any]:
    """The create's 202 body; security_groups echo the request's as Nova echoes them
    (absent: default)."""
    groups = DEFAULT_SECURITY_GROUPS if asked_groups is None else asked_groups
    return {"server": {"id": str(server.id), "links": urls.links("servers", server.id),
                       "adminPass": admin_pass, "OS-DCF:diskConfig": "MANUAL",
                       "security_groups": security_groups_view(groups)}}


# -- keypairs (Nova 2.1: views/keypairs.py without type) --------------------------------

def keypair_summary(keypair: Keypair) -> dict[str, Any]:
    return {"name": keypair.name, "public_key": keypair.public_key,
            "fingerprint": keypair.fingerprint}


def created_keypair(keypair: Keypair, private_key: str | None) -> dict[str, Any]:
    body = {**keypair_summary(keypair), "user_id": keypair.user_id}
    if private_key is not None:
        body["private_key"] = private_key
    return {"keypair": body}


def keypair_detail(keypair: Keypair) -> dict[str, Any]:
    # Keypairs are deleted for good here: never deleted, never updated when shown.
    return {"keypair": {**keypair_summary(keypair), "user_id": keypair.user_id,
                        "id": keypair.id, "created_at": usage_time(keypair.created_at),
                        "updated_at": None, "deleted": False, "deleted_at": None}}


# -- catalog -----------------------------------------------------------------------------

def flavor_summary(flavor: Flavor, urls: Urls) -> dict[str, Any]:
    return {"id": flavor.id, "name": flavor.name, "links": urls.links("flavors", flavor.id)}


def flavor_detail(flavor: Flavor, urls: Urls) -> dict[str, Any]:
    return {**flavor_summary(flavor, urls), "ram": flavor.ram, "vcpus": flavor.vcpus,
            "disk": flavor.disk, "OS-FLV-EXT-DATA:ephemeral": 0, "swap": "", "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True, "OS-FLV-DISABLED:disabled": False}


def image_summary(image: Image, urls: Urls) -> dict[str, Any]:
    return {"id": str(image.uuid), "name": image.name, "links": urls.links("images", image.uuid)}


def image_detail(image: Image, urls: Urls) -> dict[str, Any]:
    return {**image_summary(image, urls), "status": "ACTIVE", "progress": 100,
            "minDisk": image.min_disk, "minRam": image.min_ram,
            "metadata": dict(image.properties), "created": IMAGE_TIMESTAMP,
            "updated": IMAGE_TIMESTAMP, "OS-EXT-IMG-SIZE:size": image.size}


def limits_view(limits: Limits, usage: Usage) -> dict[str, Any]:
    return {"limits": {"rate": [], "absolute": {
        "maxServerMeta": limits.max_server_meta,
        "maxPersonality": limits.max_personality,
        "maxPersonalitySize": limits.max_personality_size,
        "maxTotalInstances": limits.max_total_instances,
        "maxTotalCores": limits.max_total_cores,
        "maxTotalRAMSize": limits.max_total_ram,
        "maxImageMeta": limits.max_image_meta,
        "maxTotalKeypairs": limits.max_total_keypairs,
        "maxSecurityGroups": -1,
        "maxSecurityGroupRules": -1,
        "maxServerGroups": limits.max_server_groups,
        "maxServerGroupMembers": limits.max_server_group_members,
        "maxTotalFloatingIps": -1,
        "totalInstancesUsed": usage.instances,
        "totalCoresUsed": usage.cores,
        "totalRAMUsed": usage.ram,
        "totalSecurityGroupsUsed": 0,
        "totalFloatingIpsUsed": 0,
        "totalServerGroupsUsed": usage.server_groups,
    }}}
