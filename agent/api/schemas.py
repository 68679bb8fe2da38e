"""Request bodies, shaped as Nova's v2.1 JSON schemas: unknown keys are refused, and the
secrets (adminPass, personality contents, user_data) are SecretStr so no repr, log or
error message ever shows them. Rules beyond shape and type live in agent/core/validation."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
)

from agent.core.validation import META_KEY_PATTERN
from agent.model.network import NetworkRequest as CoreNetworkRequest
from agent.model.requests import CreateServer, PersonalityFile

# Fields whose values never appear in an error message (see errors.validation_message).
SECRET_FIELDS = frozenset({"adminPass", "personality", "contents", "user_data"})

# What the core accepts as a name, for the OpenAPI document: no leading or trailing
# whitespace, no control characters, 1-255 characters.
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
Name = Annotated[str, Field(min_length=1, max_length=255, json_schema_extra={"pattern": NAME_PATTERN})]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=META_KEY_PATTERN)]
MetaValue = Annotated[str, StringConstraints(max_length=255)]
MetadataDict = dict[MetaKey, MetaValue]
# Nova's schema takes an address (format ipv4/ipv6), never "" (which would clear it).
AccessIPv4 = Annotated[str, Field(min_length=1, json_schema_extra={"format": "ipv4"})]
AccessIPv6 = Annotated[str, Field(min_length=1, json_schema_extra={"format": "ipv6"})]


# Nova's parameter_types.boolean: these spellings, nothing else (not 1, not "y").
BooleanLike = StrictBool | Literal["True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes",
                                   "yes", "False", "FALSE", "false", "0", "OFF", "Off", "off",
                                   "NO", "No", "no"]
# Nova's parameter_types.flavor_ref: a string (an id or a URL) or an integer.
FlavorRef = Annotated[StrictStr, Field(min_length=1)] | StrictInt
MAX_USER_DATA = 65535  # characters of the base64 text, as Nova's schema counts them


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def lenient_base64(value: SecretStr) -> SecretStr:
    """Nova's 'base64' format: what base64.decodebytes takes, so MIME-style line-wrapped
    text passes; bad padding does not. Never shows the value (a secret)."""
    try:
        base64.b64decode(value.get_secret_value().encode("utf-8"), validate=False)
    except (ValueError, binascii.Error):
        raise ValueError("is not a 'base64' string") from None
    return value


class Personality(_Body):
    path: Annotated[str, Field(min_length=1, max_length=255)]
    contents: SecretStr = Field(json_schema_extra={"format": "base64"})

    _base64 = field_validator("contents")(lenient_base64)


class NetworkRequest(_Body):
    uuid: str | None = Field(default=None, description="A network's id (GET /v2.0/networks)")
    port: str | None = Field(default=None, description="A free port's id (POST /v2.0/ports)")
    fixed_ip: str | None = Field(default=None, description="An IPv4 address of the network",
                                 json_schema_extra={"format": "ipv4"})


class SecurityGroupName(_Body):
    name: Name


class SchedulerHints(BaseModel):
    """Nova's scheduler hints: the known ones typed as Nova types them, any other kept as
    given (Nova's schema allows more). Stored with the server for a scheduler to read."""

    model_config = ConfigDict(extra="allow", frozen=True)

    group: StrictStr | None = Field(default=None, json_schema_extra={"format": "uuid"})
    different_host: StrictStr | list[StrictStr] | None = None
    same_host: StrictStr | list[StrictStr] | None = None
    query: StrictStr | dict[str, Any] | None = None
    target_cell: Name | None = None
    different_cell: StrictStr | list[StrictStr] | None = None
    build_near_host_ip: StrictStr | None = Field(default=None, json_schema_extra={"format": "ip"})
    cidr: Annotated[StrictStr, StringConstraints(pattern=r"^/[0-9a-f.:]+$")] | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ServerCreate(_Body):
    name: Name
    image_ref: str = Field(alias="imageRef")
    flavor_ref: FlavorRef = Field(alias="flavorRef")
    admin_pass: SecretStr | None = Field(default=None, alias="adminPass")
    metadata: MetadataDict | None = None
    access_ipv4: AccessIPv4 | None = Field(default=None, alias="accessIPv4")
    access_ipv6: AccessIPv6 | None = Field(default=None, alias="accessIPv6")
    personality: list[Personality] | None = None
    networks: Literal["auto", "none"] | list[NetworkRequest] | None = Field(
        default=None, description="NICs in order: [{uuid[, fixed_ip]} | {port}]; 'none' or [] "
        "for none; absent or 'auto' for the networks the host marks default")
    shutdown_terminate: bool | None = Field(
        default=None, description="Extension: delete the server when its guest shuts itself down")
    min_count: int | None = Field(default=None, ge=1, description=(
        "Multi-create: make none unless at least this many fit the quota (default 1)"))
    max_count: int | None = Field(default=None, ge=1, description=(
        "Multi-create: make up to this many, as many as fit the quota (default min_count); "
        "named by multi_instance_display_name_template (NAME-1, NAME-2, ...)"))
    return_reservation_id: bool | None = Field(default=None, description=(
        "Answer {\"reservation_id\": ...} (the servers' shared one) instead of the first "
        "server"))
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(default=None, alias="OS-DCF:diskConfig",
                                                          description="Accepted and ignored")
    key_name: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="A keypair of the caller's (os-keypairs): its public key goes "
        "into root's ~/.ssh/authorized_keys")
    config_drive: BooleanLike | None = Field(default=None,
                                             description="Accepted and ignored (no config drive)")
    user_data: SecretStr | None = Field(
        default=None, description="Base64, at most 65,535 characters; accepted and ignored",
        json_schema_extra={"format": "base64", "maxLength": MAX_USER_DATA})
    availability_zone: str | None = Field(default=None, description="Accepted and ignored")
    security_groups: list[SecurityGroupName] | None = Field(
        default=None, description="Recorded and shown with the server; not enforced")

    @field_validator("user_data")
    @classmethod
    def _user_data(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) > MAX_USER_DATA:
            raise ValueError(f"is longer than {MAX_USER_DATA} characters")
        return value if value is None else lenient_base64(value)

    def to_core(self) -> CreateServer:
        """The core's request."""
        return CreateServer(
            name=self.name,
            image_ref=self.image_ref,
            flavor_ref=str(self.flavor_ref),
            admin_pass=self.admin_pass,
            metadata=self.metadata or {},
            access_ipv4=self.access_ipv4 or "",
            access_ipv6=self.access_ipv6 or "",
            personality=tuple(PersonalityFile(path=p.path, contents=p.contents)
                              for p in self.personality or ()),
            shutdown_terminate=bool(self.shutdown_terminate),
            networks=self._networks(),
            min_count=self.min_count or 1,
            max_count=self.max_count,
            security_groups=self.security_group_names(),
            key_name=self.key_name,
        )

    def security_group_names(self) -> tuple[str, ...]:
        """The groups asked for; none asked: "default", as Nova records it."""
        return tuple(g.name for g in self.security_groups or ()) or ("default",)

    def _networks(self) -> tuple[CoreNetworkRequest, ...] | None:
        if self.networks is None or self.networks == "auto":
            return None
        if self.networks == "none":
            return ()
        return tuple(CoreNetworkRequest(network_id=n.uuid, port_id=n.port, fixed_ip=n.fixed_ip)
                     for n in self.networks)


class CreateServerBody(_Body):
    server: ServerCreate
    scheduler_hints: SchedulerHints | None = Field(default=None, alias="os:scheduler_hints")
    scheduler_hints_legacy: SchedulerHints | None = Field(
        default=None, alias="OS-SCH-HNT:scheduler_hints", description="Same as os:scheduler_hints")

    def to_core(self) -> CreateServer:
        hints = self.scheduler_hints or self.scheduler_hints_legacy
        request = self.server.to_core()
        return request if hints is None else request.model_copy(
            update={"scheduler_hints": hints.stored()})


class AddressesAndDiskConfig(_Body):
    """Fields an update and a rebuild share: access addresses, and a disk config that is
    accepted and ignored (the agent never resizes partitions)."""

    access_ipv4: AccessIPv4 | None = Field(default=None, alias="accessIPv4")
    access_ipv6: AccessIPv6 | None = Field(default=None, alias="accessIPv6")
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(default=None, alias="OS-DCF:diskConfig",
                                                          description="Accepted and ignored")


class ServerUpdate(AddressesAndDiskConfig):
    name: Name | None = None


class UpdateServerBody(_Body):
    server: ServerUpdate


class MetadataBody(_Body):
    metadata: MetadataDict


class MetaItemBody(_Body):
    meta: MetadataDict = Field(json_schema_extra={"minProperties": 1, "maxProperties": 1})


class KeypairCreate(_Body):
    name: Annotated[str, Field(min_length=1, max_length=255)]
    public_key: str | None = Field(default=None, description="An OpenSSH public key to import; "
                                   "absent: a new key is made and its private_key returned once")

    @field_validator("public_key", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Nova's schema: a string when present (a default is never validated, so only an
        # explicit null comes here).
        if value is None:
            raise ValueError("None is not of type 'string'")
        return value


class KeypairCreateBody(_Body):
    keypair: KeypairCreate
