"""Request bodies of POST /servers/{id}/action, shaped as Nova's v2.1 JSON schemas: a
body names exactly one action; unknown keys are refused; secrets are SecretStr."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag

from agent.api.schemas import AddressesAndDiskConfig, FlavorRef, MetadataDict, Name, Personality
from agent.model.actions import RebuildServer
from agent.model.requests import PersonalityFile


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Body):
    """An empty object: these actions take no input (null is the usual form)."""


Nothing = NoArgs | None
_NOTHING = Field(description="null (or {})")


class RebootType(_Body):
    # Nova's schema takes these spellings.
    type: Literal["SOFT", "Soft", "soft", "HARD", "Hard", "hard"]


class RebootAction(_Body):
    reboot: RebootType


class StopAction(_Body):
    os_stop: Nothing = Field(alias="os-stop", description="null (or {})")


class StartAction(_Body):
    os_start: Nothing = Field(alias="os-start", description="null (or {})")


class SuspendAction(_Body):
    suspend: Nothing = _NOTHING


class ResumeAction(_Body):
    resume: Nothing = _NOTHING


class RescueArgs(_Body):
    admin_pass: SecretStr | None = Field(default=None, alias="adminPass")
    rescue_image_ref: str | None = Field(default=None, description="Default: the server's image")


class RescueAction(_Body):
    rescue: RescueArgs | None = Field(description="null, or the rescue's adminPass and image")


class UnrescueAction(_Body):
    unrescue: Nothing = _NOTHING


class ResizeArgs(_Body):
    flavor_ref: FlavorRef = Field(alias="flavorRef")
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(default=None, alias="OS-DCF:diskConfig",
                                                          description="Accepted and ignored")


class ResizeAction(_Body):
    resize: ResizeArgs


class ConfirmResizeAction(_Body):
    confirm_resize: Nothing = Field(alias="confirmResize", description="null (or {})")


class RevertResizeAction(_Body):
    revert_resize: Nothing = Field(alias="revertResize", description="null (or {})")


class RebuildArgs(AddressesAndDiskConfig):
    image_ref: Annotated[str, Field(min_length=1)] = Field(alias="imageRef")
    admin_pass: SecretStr | None = Field(default=None, alias="adminPass")
    personality: list[Personality] | None = None
    name: Name | None = None
    metadata: MetadataDict | None = None
    preserve_ephemeral: bool | None = Field(default=None, description="Accepted and ignored")
    key_name: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="As microversion 2.54: a keypair's name replaces the server's "
        "key, null removes it; absent keeps it (re-injected on the fresh disk)")

    def to_core(self) -> RebuildServer:
        return RebuildServer(
            image_ref=self.image_ref, admin_pass=self.admin_pass, name=self.name,
            metadata=self.metadata, access_ipv4=self.access_ipv4, access_ipv6=self.access_ipv6,
            personality=tuple(PersonalityFile(path=p.path, contents=p.contents)
                              for p in self.personality or ()),
            key_name=self.key_name, key_name_given="key_name" in self.model_fields_set)


class RebuildAction(_Body):
    rebuild: RebuildArgs


class ChangePasswordArgs(_Body):
    admin_pass: SecretStr = Field(alias="adminPass")


class ChangePasswordAction(_Body):
    change_password: ChangePasswordArgs = Field(alias="changePassword")


class ConsoleOutputArgs(_Body):
    # Nova's schema: an integer or a string of digits (or null); -1 (or null): everything.
    length: Annotated[int, Field(ge=-1)] | Annotated[str, Field(pattern=r"^-?[0-9]+$")] | None = \
        Field(default=None, description="The last this many lines (-1 or null: all)")

    def lines(self) -> int | None:
        if self.length is None:
            return None
        n = int(self.length)
        if n < -1:
            raise ValueError("length")
        return n


class ConsoleOutputAction(_Body):
    get_console_output: ConsoleOutputArgs = Field(alias="os-getConsoleOutput")


ACTIONS: dict[str, type[_Body]] = {
    "reboot": RebootAction, "os-stop": StopAction, "os-start": StartAction,
    "suspend": SuspendAction, "resume": ResumeAction, "rescue": RescueAction,
    "unrescue": UnrescueAction, "resize": ResizeAction, "confirmResize": ConfirmResizeAction,
    "revertResize": RevertResizeAction, "rebuild": RebuildAction,
    "changePassword": ChangePasswordAction, "os-getConsoleOutput": ConsoleOutputAction,
}


def action_name(body: Any) -> str | None:
    """The action a body names: its one key, if that is an action."""
    if isinstance(body, dict) and len(body) == 1:
        (key,) = body
        return key if key in ACTIONS else None
    return None


ActionBody = Annotated[
    Annotated[RebootAction, Tag("reboot")] | Annotated[StopAction, Tag("os-stop")]
    | Annotated[StartAction, Tag("os-start")] | Annotated[SuspendAction, Tag("suspend")]
    | Annotated[ResumeAction, Tag("resume")] | Annotated[RescueAction, Tag("rescue")]
    | Annotated[UnrescueAction, Tag("unrescue")] | Annotated[ResizeAction, Tag("resize")]
    | Annotated[ConfirmResizeAction, Tag("confirmResize")]
    | Annotated[RevertResizeAction, Tag("revertResize")]
    | Annotated[RebuildAction, Tag("rebuild")] | Annotated[ChangePasswordAction, Tag("changePassword")]
    | Annotated[ConsoleOutputAction, Tag("os-getConsoleOutput")],
    Discriminator(action_name)]
