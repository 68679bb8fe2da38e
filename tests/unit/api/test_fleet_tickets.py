"""The controller's job-ticket route (issue 12): GET /fleet/v1/jobs/{job_id}?host=H with
X-Fleet-Token, answered only where tickets are wired (the controller)."""

from __future__ import annotations

import uuid

import httpx

from agent.api.app import create_api
from agent.core.fleet_tickets import FleetTickets
from agent.model.fleet import JobTicket
from tests.unit.api.conftest import ALICE, TEST_NET, build_env, client_for, fault

SECRET = "fleet-secret-0123456789"
FLEET = {"X-Fleet-Token": SECRET}


async def controller_env():
    deps, store, images, _ = build_env()
    deps.tickets = FleetTickets(store, SECRET)
    return create_api(deps), store, images


async def placed(client: httpx.AsyncClient, store, images, host: str = "hv1"):
    body = {"name": "vm", "imageRef": str(images.get("cirros").uuid), "flavorRef": "1",
            "adminPass": "Secret-Pass-1", "networks": [{"uuid": str(TEST_NET.id)}]}
    r = await client.post("/v2.1/servers", json={"server": body}, headers=ALICE)
    assert r.status_code == 202, r.text
    server_id = uuid.UUID(r.json()["server"]["id"])
    await store.update_server(server_id, {"host": host}, cause="placed")
    [job] = store.unfinished_jobs()
    return server_id, job


async def test_the_placed_host_gets_the_job_with_its_payload_server_and_ports():
    app, store, images = await controller_env()
    async with client_for(app) as client:
        server_id, job = await placed(client, store, images)
        r = await client.get(f"/fleet/v1/jobs/{job.id}?host=hv1", headers=FLEET)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    ticket = JobTicket.model_validate_json(r.content)
    assert ticket.job.id == job.id and ticket.job.payload["admin_pass_hash"].startswith("$6$")
    assert ticket.server.id == server_id and ticket.server.host == "hv1"
    assert [p.ip for p in ticket.ports] == [p.ip for p in store.list_ports(device_id=str(server_id))]
    assert len(ticket.ports) == 1
    # The job to run, as the API made it; the controller's record says the host has it.
    assert (ticket.job.status.value, ticket.job.step, ticket.job.attempts) == ("queued", "", 0)
    # Kept after a fetch: an agent killed before it committed the ticket fetches it again.
    assert store.get_job(job.id).payload == job.payload


async def test_a_dispatched_jobs_first_fetch_records_that_its_host_has_it():
    app, store, images = await controller_env()
    async with client_for(app) as client:
        _, job = await placed(client, store, images)
        await store.update_job(job.id, {"status": "succeeded", "step": "dispatched"})
        for _ in range(2):
            r = await client.get(f"/fleet/v1/jobs/{job.id}?host=hv1", headers=FLEET)
            assert r.status_code == 200
            assert JobTicket.model_validate_json(r.content).job.status.value == "queued"
    assert (store.get_job(job.id).status.value, store.get_job(job.id).step) == ("succeeded", "fetched")


async def test_another_host_or_an_unknown_job_is_404():
    app, store, images = await controller_env()
    async with client_for(app) as client:
        _, job = await placed(client, store, images)
        fault(await client.get(f"/fleet/v1/jobs/{job.id}?host=hv2", headers=FLEET), 404,
              "itemNotFound")
        fault(await client.get(f"/fleet/v1/jobs/{uuid.uuid4()}?host=hv1", headers=FLEET), 404,
              "itemNotFound")


async def test_a_job_of_a_server_not_yet_placed_is_404():
    app, store, images = await controller_env()
    async with client_for(app) as client:
        _, job = await placed(client, store, images, host="")
        fault(await client.get(f"/fleet/v1/jobs/{job.id}?host=hv1", headers=FLEET), 404,
              "itemNotFound")


async def test_without_the_fleet_token_401_with_a_wrong_one_403_and_an_api_token_is_no_token():
    app, store, images = await controller_env()
    async with client_for(app) as client:
        _, job = await placed(client, store, images)
        url = f"/fleet/v1/jobs/{job.id}?host=hv1"
        for headers in ({}, ALICE):  # an API token is not the fleet's
            r = await client.get(url, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == 401
        message = fault(await client.get(url, headers={"X-Fleet-Token": SECRET + "x"}), 403,
                        "forbidden")
        assert SECRET not in message
        fault(await client.get(url, headers={"X-Fleet-Token": "ünï".encode()}), 403, "forbidden")


async def test_a_missing_host_is_400_naming_it():
    app, store, images = await controller_env()
    async with client_for(app) as client:
        _, job = await placed(client, store, images)
        r = await client.get(f"/fleet/v1/jobs/{job.id}", headers=FLEET)
    assert "host" in fault(r, 400, "badRequest")


async def test_an_agents_api_has_no_ticket_route_and_asks_for_its_own_token():
    deps = build_env()[0]
    async with client_for(create_api(deps)) as client:
        r = await client.get(f"/fleet/v1/jobs/{uuid.uuid4()}?host=hv1", headers=FLEET)
        assert r.status_code == 401
        r = await client.get(f"/fleet/v1/jobs/{uuid.uuid4()}?host=hv1", headers={**FLEET, **ALICE})
        assert r.status_code == 404


async def test_the_ticket_route_is_not_in_the_openapi_document():
    app, _, _ = await controller_env()
    async with client_for(app) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/fleet")]


async def test_another_method_on_the_ticket_route_is_405_allowing_get():
    """The Allow header names GET (it used to be empty: the route was left out of the
    methods the 405 handler looks up)."""
    app, _store, _images = await controller_env()
    async with client_for(app) as client:
        r = await client.post(f"/fleet/v1/jobs/{uuid.uuid4()}?host=hv1", headers=FLEET)
    fault(r, 405, "badMethod")
    assert r.headers["Allow"] == "GET"
