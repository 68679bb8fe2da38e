"""Request bodies, shaped as Nova's v2.1 JSON schemas: unknown keys are refused, and the
secrets (adminPass, personality contents, user_data) are SecretStr so no repr, log or
error message ever shows them. Rules beyond shape and type live in agent/core/validation."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from agent.model.network import NetworkRequest as CoreNetworkRequest
from agent.model.requests import CreateServer, PersonalityFile

# Fields whose values never appear in an error message (see errors.validation_message).
SECRET_FIELDS = frozenset({"adminPass", "personality", "contents", "user_data"})

# What the core accepts as a name, for the OpenAPI document: no leading or trailing
# whitespace, no control characters, 1-255 characters.
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
Name = Annotated[str, Field(min_length=1, max_length=255, json_schema_extra={"pattern": NAME_PATTERN})]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaValue = Annotated[str, StringConstraints(max_length=255)]
MetadataDict = dict[MetaKey, MetaValue]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Personality(_Body):
    path: Annotated[str, Field(min_length=1, max_length=255)]
    contents: SecretStr = Field(json_schema_extra={"format": "base64"})

    @field_validator("contents")
    @classmethod
    def _base64(cls, value: SecretStr) -> SecretStr:
        try:
            base64.b64decode(value.get_secret_value().encode("ascii"), validate=False)
        except (ValueError, binascii.Error):
            raise ValueError("is not a 'base64' string") from None
        return value


class NetworkRequest(_Body):
    uuid: str | None = Field(default=None, description="A network's id (GET /v2.0/networks)")
    port: str | None = Field(default=None, description="A free port's id (POST /v2.0/ports)")
    fixed_ip: str | None = Field(default=None, description="An IPv4 address of the network",
                                 json_schema_extra={"format": "ipv4"})


class SecurityGroupName(_Body):
    name: Annotated[str, Field(min_length=1, max_length=255)]


class ServerCreate(_Body):
    name: Name
    image_ref: str = Field(alias="imageRef")
    flavor_ref: Annotated[str, Field(min_length=1)] = Field(alias="flavorRef")
    admin_pass: SecretStr | None = Field(default=None, alias="adminPass")
    metadata: MetadataDict | None = None
    access_ipv4: str | None = Field(default=None, alias="accessIPv4",
                                    json_schema_extra={"format": "ipv4"})
    access_ipv6: str | None = Field(default=None, alias="accessIPv6",
                                    json_schema_extra={"format": "ipv6"})
    personality: list[Personality] | None = None
    networks: Literal["auto", "none"] | list[NetworkRequest] | None = Field(
        default=None, description="NICs in order: [{uuid[, fixed_ip]} | {port}]; 'none' or [] "
        "for none; absent or 'auto' for the networks the host marks default")
    shutdown_terminate: bool | None = Field(
        default=None, description="Extension: delete the server when its guest shuts itself down")
    min_count: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported")
    max_count: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported")
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(default=None, alias="OS-DCF:diskConfig",
                                                          description="Accepted and ignored")
    key_name: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="A keypair of the caller's (os-keypairs): its public key goes "
        "into root's ~/.ssh/authorized_keys")
    config_drive: bool | str | None = Field(default=None, description="Accepted and ignored")
    user_data: SecretStr | None = Field(default=None, description="Accepted and ignored")
    availability_zone: str | None = Field(default=None, description="Accepted and ignored")
    security_groups: list[SecurityGroupName] | None = Field(default=None,
                                                            description="Accepted and ignored")

    def to_core(self) -> CreateServer:
        """The core's request."""
        return CreateServer(
            name=self.name,
            image_ref=self.image_ref,
            flavor_ref=self.flavor_ref,
            admin_pass=self.admin_pass,
            metadata=self.metadata or {},
            access_ipv4=self.access_ipv4 or "",
            access_ipv6=self.access_ipv6 or "",
            personality=tuple(PersonalityFile(path=p.path, contents=p.contents)
                              for p in self.personality or ()),
            shutdown_terminate=bool(self.shutdown_terminate),
            networks=self._networks(),
            key_name=self.key_name,
        )

    def _networks(self) -> tuple[CoreNetworkRequest, ...] | None:
        if self.networks is None or self.networks == "auto":
            return None
        if self.networks == "none":
            return ()
        return tuple(CoreNetworkRequest(network_id=n.uuid, port_id=n.port, fixed_ip=n.fixed_ip)
                     for n in self.networks)


class CreateServerBody(_Body):
    server: ServerCreate


class AddressesAndDiskConfig(_Body):
    """Fields an update and a rebuild share: access addresses, and a disk config that is
    accepted and ignored (the agent never resizes partitions)."""

    access_ipv4: str | None = Field(default=None, alias="accessIPv4",
                                    json_schema_extra={"format": "ipv4"})
    access_ipv6: str | None = Field(default=None, alias="accessIPv6",
                                    json_schema_extra={"format": "ipv6"})
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
