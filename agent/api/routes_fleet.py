"""GET /fleet/v1/jobs/{job_id}?host=H: a job's ticket, for the agent of the host the job's
server is placed on (issue 12; agent/core/fleet_tickets.py). Served by the controller
only; not part of the Compute API (no X-Auth-Token, not in the OpenAPI document): the
caller proves it is one of the fleet's agents with the shared secret in X-Fleet-Token.
401 without the header, 403 with a wrong one, 404 for a job unknown or another host's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from agent.api.auth import deps_of
from agent.api.errors import ApiFault
from agent.api.routing import Header, Query, Router

if TYPE_CHECKING:  # the middleware imports this module for FLEET_PREFIX on every daemon
    from agent.core.fleet_tickets import FleetTickets

FLEET_PREFIX = "/fleet/"
TOKEN_HEADER = "X-Fleet-Token"  # noqa: S105 - a header name

router = Router()


def _tickets(request: Request) -> FleetTickets:
    tickets = deps_of(request).tickets
    if tickets is None:  # not a controller (the router is not included then: a guard)
        raise ApiFault(404, "Not found")
    return tickets


@router.get("/fleet/v1/jobs/{job_id}", include_in_schema=False)
async def job_ticket(request: Request, job_id: UUID,
                     host: Annotated[str, Query(min_length=1, max_length=200)],
                     token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None) -> Response:
    tickets = _tickets(request)
    if token is None:
        raise ApiFault(401, f"The request needs the fleet's token ({TOKEN_HEADER}).")
    if not tickets.authorized(token):
        raise ApiFault(403, "The fleet's token is not valid.")
    ticket = await tickets.fetch(job_id, host)
    # The payload may hold secrets: never cached on the way.
    return Response(ticket.model_dump_json(), media_type="application/json",
                    headers={"Cache-Control": "no-store"})
