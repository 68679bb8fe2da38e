"""Who is asking: an X-Auth-Token looked up in the configured tokens (or, only on the
local unix socket, a default context when no token is sent).

The middleware authenticates every request but the public ones before anything else
happens (as keystonemiddleware sits in front of Nova); the dependencies here hand the
result to the handlers and check a project id given in the URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from agent.api.errors import UNAUTHORIZED_MESSAGE, ApiFault
from agent.api.routing import ApiKeyHeader, Depends, Path, Security
from agent.model.requests import RequestContext

if TYPE_CHECKING:
    from agent.api.app import ApiDeps

TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name


class TokenInfo(BaseModel):
    """What a token stands for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    is_admin: bool = False


def authenticate(tokens: Mapping[str, TokenInfo], default_context: RequestContext | None,
                 token: str | None, request_id: str) -> RequestContext | None:
    """The caller's context, or None (-> 401). A token that is sent must be known, even
    where a default context exists: a wrong token is never quietly someone else."""
    if token is None:
        if default_context is None:
            return None
        return default_context.model_copy(update={"request_id": request_id})
    info = tokens.get(token)
    if info is None:
        return None
    return RequestContext(project_id=info.project_id, user_id=info.user_id,
                          is_admin=info.is_admin, request_id=request_id)


def deps_of(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


# Documents the header in the OpenAPI document; the middleware does the real check.
_token = ApiKeyHeader(name=TOKEN_HEADER, scheme_name="KeystoneToken",
                      description="A token of this host's configured tokens")


async def request_context(request: Request,
                          _token: Annotated[str | None, Security(_token)] = None) -> RequestContext:
    ctx = getattr(request.state, "context", None)
    if not isinstance(ctx, RequestContext):
        raise ApiFault(401, UNAUTHORIZED_MESSAGE)
    return ctx


Ctx = Annotated[RequestContext, Depends(request_context)]


async def check_project_in_path(
        ctx: Ctx,
        project_id: Annotated[str, Path(description="The caller's project (optional in the URL)")],
) -> None:
    """Nova accepts /v2.1/{project_id}/...; the project must be the token's, for admins
    too (nova.api.openstack.wsgi answers 400 badRequest, not 403)."""
    if project_id != ctx.project_id:
        raise ApiFault(400, f"Malformed request URL: URL's project_id '{project_id[:64]}' "
                       f"doesn't match Context's project_id '{ctx.project_id}'")
