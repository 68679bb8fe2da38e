"""The job ticket over HTTP (issue 12), against httpx's mock transport: the request the
controller gets (path, host, token), what each answer becomes, and the bounds."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from agent.adapters.fleet_tickets import HttpxJobTickets, read_fleet_token
from agent.errors import ConfigError, ControllerUnavailable
from tests.unit.core.test_fleet_jobs import ticket_for

TOKEN = "fleet-TOKEN-0123456789"


def tickets(handler, **kw) -> HttpxJobTickets:  # type: ignore[no-untyped-def]
    return HttpxJobTickets("http://ctl.example:8780/", "hv1", TOKEN,
                           transport=httpx.MockTransport(handler), **kw)


async def test_a_ticket_is_fetched_for_this_host_with_the_fleet_token():
    ticket = ticket_for()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=ticket.model_dump_json())

    assert await tickets(handler).fetch(ticket.job.id) == ticket
    assert seen[0].url.path == f"/fleet/v1/jobs/{ticket.job.id}"
    assert seen[0].url.params["host"] == "hv1"
    assert seen[0].headers["X-Fleet-Token"] == TOKEN


async def test_a_404_means_the_job_is_gone():
    assert await tickets(lambda r: httpx.Response(404)).fetch(uuid.uuid4()) is None


@pytest.mark.parametrize("status", [401, 403, 500, 503, 302])
async def test_any_other_answer_is_the_controller_unavailable_for_now(status):
    with pytest.raises(ControllerUnavailable, match=str(status)) as e:
        await tickets(lambda r: httpx.Response(status, headers={"Location": "http://x/"})).fetch(
            uuid.uuid4())
    assert TOKEN not in str(e.value)


async def test_an_unreachable_controller_is_unavailable_and_the_error_hides_the_token():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused {request.headers['X-Fleet-Token']}")

    with capture_logs() as logs, pytest.raises(ControllerUnavailable, match="ConnectError") as e:
        await tickets(handler).fetch(uuid.uuid4())
    assert TOKEN not in str(e.value) and TOKEN not in repr(logs)


async def test_an_answer_that_is_not_a_ticket_is_refused():
    with pytest.raises(ControllerUnavailable, match="not a valid JobTicket"):
        await tickets(lambda r: httpx.Response(200, content=b'{"job": 1}')).fetch(uuid.uuid4())


async def test_a_ticket_larger_than_the_bound_is_refused():
    with pytest.raises(ControllerUnavailable, match="larger than 1000 bytes"):
        await tickets(lambda r: httpx.Response(200, content=b"x" * 5000), max_bytes=1000).fetch(
            uuid.uuid4())


async def test_a_controller_that_does_not_answer_in_time_is_unavailable():
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    with pytest.raises(ControllerUnavailable, match="Timeout"):
        await tickets(handler, timeout_s=0.05).fetch(uuid.uuid4())


def test_the_token_is_read_from_its_file_and_errors_never_show_it(tmp_path: Path):
    file = tmp_path / "fleet.secret"
    file.write_text(TOKEN + "\n")
    assert read_fleet_token(file) == TOKEN
    assert TOKEN not in repr(tickets(lambda r: httpx.Response(404)))
    file.write_text("two words " + TOKEN)
    with pytest.raises(ConfigError, match="visible ASCII") as e:
        read_fleet_token(file)
    assert TOKEN not in str(e.value)
    with pytest.raises(ConfigError, match="cannot read"):
        read_fleet_token(tmp_path / "missing")
