"""POST /servers/{id}/action: reboot, os-stop, os-start, suspend, resume, rescue,
unrescue, resize, confirmResize, revertResize, rebuild, changePassword, and
os-getConsoleOutput (the tail of the serial console's log; no job).

The body names exactly one action (else 400, before the body is validated); an action
not legal in the server's state is a 409 naming the status (the transition table's
message). Secrets are never echoed: only rescue and rebuild answer with an adminPass,
the one the caller gave or the one generated for it, as Nova does."""

from __future__ import annotations

import json
from typing import Annotated

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api.auth import Ctx, deps_of
from agent.api.errors import MALFORMED_BODY, ApiFault
from agent.api.models_actions import ACTION_RESPONSES
from agent.api.routes_servers import parse_server_id, server_view
from agent.api.routing import Body, Depends, Router
from agent.api.schemas_actions import (
    ACTIONS,
    ActionBody,
    ChangePasswordAction,
    ConsoleOutputAction,
    RebootAction,
    RebuildAction,
    RescueAction,
    ResizeAction,
    action_name,
)
from agent.core.actions import SIMPLE, ServerActions

router = Router(tags=["server actions"])


async def named_action(request: Request) -> str:
    """The action the body names. Runs before the body is validated, so that an unknown
    action (or none, or two) gets a message that says so."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:  # FastAPI refuses malformed JSON before this runs; to be sure
        raise ApiFault(400, MALFORMED_BODY) from None
    if not isinstance(body, dict):
        raise ApiFault(400, MALFORMED_BODY)
    name = action_name(body)
    if name is None:
        if len(body) == 1:
            (key,) = body
            raise ApiFault(400, f"There is no such action: {str(key)[:64]}")
        raise ApiFault(400, "The body must name exactly one action, one of: "
                       + ", ".join(ACTIONS))
    return name


def _accepted() -> Response:
    return Response(status_code=202, media_type="text/plain")


@router.post("/servers/{server_id}/action", status_code=202, response_model=None,
             responses=ACTION_RESPONSES, summary="Act on a server (one action per request)")
async def server_action(request: Request, ctx: Ctx, server_id: str,
                        name: Annotated[str, Depends(named_action)],
                        body: Annotated[ActionBody, Body()]) -> Response:
    deps = deps_of(request)
    sid = parse_server_id(server_id)
    actions = ServerActions(deps.servers)
    if name in SIMPLE:
        await actions.simple(ctx, sid, name)
    elif isinstance(body, RebootAction):
        await actions.reboot(ctx, sid, hard=body.reboot.type.upper() == "HARD")
    elif isinstance(body, ResizeAction):
        await actions.resize(ctx, sid, str(body.resize.flavor_ref))
    elif isinstance(body, ChangePasswordAction):
        await actions.change_password(ctx, sid, body.change_password.admin_pass.get_secret_value())
    elif isinstance(body, RescueAction):
        args = body.rescue
        password = await actions.rescue(
            ctx, sid, args.admin_pass.get_secret_value() if args and args.admin_pass else None,
            args.rescue_image_ref if args else None)
        return JSONResponse({"adminPass": password}, status_code=200)
    elif isinstance(body, ConsoleOutputAction):
        try:
            lines = body.get_console_output.lines()
        except ValueError:
            raise ApiFault(400, "Invalid input for field/attribute length. Value must be "
                                ">= -1.") from None
        server = deps.servers.get_live(ctx, sid)
        return JSONResponse({"output": deps.consoles.output(server.id, lines)}, status_code=200)
    elif isinstance(body, RebuildAction):
        server, password = await actions.rebuild(ctx, sid, body.rebuild.to_core())
        # With its real addresses (without OS-EXT-IPS attributes), as Nova answers.
        shown = server_view(request, ctx, server, extended_addresses=False)
        return JSONResponse({"server": {**shown, "adminPass": password}}, status_code=202)
    return _accepted()
