"""Response shapes, for the OpenAPI document only: handlers build plain dicts (views.py)
and return them as they are; tests hold every body to these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model


class _Out(BaseModel):
    # Built on first use (the OpenAPI document, tests): an idle daemon never validates these.
    model_config = ConfigDict(populate_by_name=True, extra="forbid", defer_build=True)


class Link(_Out):
    rel: str
    href: str
    type: str | None = None  # the describedby link's media type


class MediaType(_Out):
    base: str
    type: str


class VersionSummary(_Out):
    id: str
    status: str
    version: str
    min_version: str
    updated: str
    links: list[Link]


class Version(VersionSummary):
    media_types: list[MediaType] = Field(alias="media-types")


class VersionList(_Out):
    versions: list[VersionSummary]


class VersionShow(_Out):
    version: Version


# -- faults ------------------------------------------------------------------------------

class FaultDetail(_Out):
    code: int
    message: str


class KeystoneErrorDetail(_Out):
    code: int
    title: str
    message: str


class Unauthorized(_Out):
    error: KeystoneErrorDetail


def _fault(name: str, key: str) -> type[BaseModel]:
    model: type[BaseModel] = create_model(name, __base__=_Out, **{key: (FaultDetail, ...)})  # type: ignore[call-overload]
    return model


BadRequest = _fault("BadRequest", "badRequest")
Forbidden = _fault("Forbidden", "forbidden")
ItemNotFound = _fault("ItemNotFound", "itemNotFound")
Conflict = _fault("ConflictingRequest", "conflictingRequest")
OverLimit = _fault("OverLimit", "overLimit")
ComputeFault = _fault("ComputeFault", "computeFault")
ServiceUnavailable = _fault("ServiceUnavailable", "serviceUnavailable")


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    table: dict[int, tuple[type[BaseModel], str]] = {
        400: (BadRequest, "Invalid request (the message names the field), or the URL's "
              "project is not the token's"),
        401: (Unauthorized, "No token, or an unknown one"),
        403: (Forbidden, "Quota exceeded, or not allowed by policy"),
        404: (ItemNotFound, "Not found (or not the caller's)"),
        406: (ComputeFault, "The requested microversion is not supported"),
        409: (Conflict, "Not allowed in the server's current state"),
        413: (OverLimit, "Request body too large"),
        503: (ServiceUnavailable, "The state store is unavailable"),
    }
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": table[code][0], "description": table[code][1]} for code in codes}
    # "default" also keeps FastAPI from documenting a 422 this API never sends.
    out["default"] = {"model": ComputeFault, "description": "Unexpected error (computeFault)"}
    return out


# Version discovery: no token, no microversion; only the body checks come before it.
PUBLIC_ERRORS = _responses(400, 413)
READ_ERRORS = _responses(400, 401, 403, 404, 406, 413, 503)
WRITE_ERRORS = _responses(400, 401, 403, 404, 406, 409, 413, 503)


# -- servers -----------------------------------------------------------------------------

class Ref(_Out):
    id: str
    links: list[Link]


class ServerSummary(_Out):
    id: str
    name: str
    links: list[Link]


class ServerIndex(_Out):
    servers: list[ServerSummary]
    servers_links: list[Link] | None = None


class ServerFault(_Out):
    code: int
    message: str
    created: str


class SecurityGroupRef(_Out):
    name: str


class ServerDetail(_Out):
    id: str
    name: str
    status: str
    tenant_id: str
    user_id: str
    metadata: dict[str, str]
    hostId: str
    image: Ref
    flavor: Ref
    created: str
    updated: str
    addresses: dict[str, list[dict[str, Any]]]
    accessIPv4: str
    accessIPv6: str
    links: list[Link]
    progress: int
    disk_config: str = Field(alias="OS-DCF:diskConfig")
    vm_state: str = Field(alias="OS-EXT-STS:vm_state")
    task_state: str | None = Field(alias="OS-EXT-STS:task_state")
    power_state: int = Field(alias="OS-EXT-STS:power_state")
    availability_zone: str = Field(alias="OS-EXT-AZ:availability_zone")
    launched_at: str | None = Field(alias="OS-SRV-USG:launched_at")
    terminated_at: str | None = Field(alias="OS-SRV-USG:terminated_at")
    key_name: str | None
    config_drive: str
    security_groups: list[SecurityGroupRef]
    volumes_attached: list[dict[str, Any]] = Field(alias="os-extended-volumes:volumes_attached")
    fault: ServerFault | None = None
    # Admin tokens only (Nova's extended server attributes at 2.1).
    host: str | None = Field(default=None, alias="OS-EXT-SRV-ATTR:host")
    hypervisor_hostname: str | None = Field(default=None, alias="OS-EXT-SRV-ATTR:hypervisor_hostname")
    instance_name: str | None = Field(default=None, alias="OS-EXT-SRV-ATTR:instance_name")


class ServerDetailIndex(_Out):
    servers: list[ServerDetail]
    servers_links: list[Link] | None = None


class ServerShow(_Out):
    server: ServerDetail


class CreatedServer(_Out):
    id: str
    links: list[Link]
    adminPass: str
    disk_config: str = Field(alias="OS-DCF:diskConfig")
    security_groups: list[SecurityGroupRef]


class CreatedServerShow(_Out):
    server: CreatedServer


class CreatedReservation(_Out):
    """A create with return_reservation_id: the id its servers share (a list filter)."""

    reservation_id: str


class AddressEntry(_Out):
    version: int
    addr: str


class ServerAddresses(_Out):
    addresses: dict[str, list[AddressEntry]]


class NetworkAddresses(RootModel[dict[str, list[AddressEntry]]]):
    """{network name: [addresses]}: one key, the network asked for."""


class ServerPassword(_Out):
    password: str


class Metadata(_Out):
    metadata: dict[str, str]


class MetaItem(_Out):
    meta: dict[str, str]


# -- keypairs (2.1 shapes: no type, no links) -----------------------------------------------

class KeypairSummary(_Out):
    name: str
    public_key: str
    fingerprint: str


class KeypairListItem(_Out):
    keypair: KeypairSummary


class KeypairIndex(_Out):
    keypairs: list[KeypairListItem]


class CreatedKeypair(KeypairSummary):
    user_id: str
    private_key: str | None = Field(default=None, description="Only when generated, only now")


class CreatedKeypairShow(_Out):
    keypair: CreatedKeypair


class KeypairDetail(KeypairSummary):
    user_id: str
    id: int
    created_at: str
    updated_at: str | None
    deleted: bool
    deleted_at: str | None


class KeypairShow(_Out):
    keypair: KeypairDetail
