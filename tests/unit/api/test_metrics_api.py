"""GET /metrics: Prometheus text for admins on TCP, for the local default context on the
unix socket, for nobody else; requests timed by route template, never by raw path; and
no part of the OpenAPI document."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.api.app import create_api
from agent.model.requests import RequestContext
from agent.model.states import VmState
from tests.unit.api.conftest import ADMIN, ALICE, Env, build_env, client_for, fault

LOCAL = RequestContext(project_id="p-local", user_id="local")


def families(response: httpx.Response) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """name -> [(sample name, labels, value)], parsed as Prometheus would."""
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(response.text)}


async def test_tcp_needs_a_token(env: Env):
    r = await env.client.get("/metrics")
    assert r.status_code == 401 and "compute_agent" not in r.text


async def test_tcp_refuses_a_project_token_as_counts_span_every_project(env: Env):
    message = fault(await env.client.get("/metrics", headers=ALICE), 403, "forbidden")
    assert "admin" in message


async def test_an_admin_gets_the_text_format_with_every_metric(env: Env):
    r = await env.client.get("/metrics", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    found = families(r)
    assert {"compute_agent_jobs_in_progress", "compute_agent_job_duration_seconds",
            "compute_agent_event_lag_seconds", "compute_agent_libvirt_connected",
            "compute_agent_injection_batch_duration_seconds", "compute_agent_injection_batch_size",
            "compute_agent_api_request_duration_seconds"} <= set(found)
    assert ("compute_agent_jobs_in_progress", {"kind": "create"}, 0.0) in \
        found["compute_agent_jobs_in_progress"]


async def test_server_counts_by_status_come_from_the_store(env: Env):
    env.deps.metrics.watch_servers(env.store)
    await env.create_active()
    await env.create()
    gone = await env.create_active()
    await env.set_state(gone, VmState.DELETED)
    servers = families(await env.client.get("/metrics", headers=ADMIN))["compute_agent_servers"]
    counts = {labels["status"]: v for _, labels, v in servers}
    assert counts["ACTIVE"] == 1 and counts["BUILD"] == 1 and counts["SHUTOFF"] == 0
    assert "DELETED" not in counts


async def test_requests_are_timed_by_route_template_and_status_class(env: Env):
    server_id = await env.create_active()
    assert (await env.client.get(f"/v2.1/servers/{server_id}", headers=ALICE)).status_code == 200
    assert (await env.client.get(f"/v2.1/p-alice/servers/{server_id}", headers=ALICE)).status_code == 200
    assert (await env.client.get("/v2.1/no-such-thing", headers=ALICE)).status_code == 404
    r = await env.client.get("/metrics", headers=ADMIN)
    counts = {(s[1]["method"], s[1]["route"], s[1]["status_class"]): s[2]
              for s in families(r)["compute_agent_api_request_duration_seconds"]
              if s[0].endswith("_count")}
    assert counts[("GET", "/v2.1/servers/{server_id}", "2xx")] == 1
    assert counts[("POST", "/v2.1/servers", "2xx")] == 1
    assert counts[("GET", "/v2.1/{project_id}/servers/{server_id}", "2xx")] == 1
    assert counts[("GET", "unmatched", "4xx")] == 1
    # A raw path would make a series per server (and per project).
    assert server_id not in r.text and "p-alice" not in r.text


async def test_a_project_id_equal_to_another_parameter_is_labelled_by_its_own_name(env: Env):
    """/v2.1/x/servers/x: the prefix's project id is {project_id}, not the server id's name."""
    assert (await env.client.get("/v2.1/x/servers/x", headers=ALICE)).status_code == 400
    r = await env.client.get("/metrics", headers=ADMIN)
    routes = {s[1]["route"] for s in families(r)["compute_agent_api_request_duration_seconds"]}
    assert "/v2.1/{project_id}/servers/{server_id}" in routes
    assert "/v2.1/{server_id}/servers/{server_id}" not in routes


async def test_the_unix_socket_default_context_may_read_without_a_token():
    deps, *_ = build_env(default_context=LOCAL)
    async with client_for(create_api(deps)) as client:
        r = await client.get("/metrics")
        assert r.status_code == 200, r.text
        assert "compute_agent_libvirt_connected" in families(r)
        # A token sent on the socket still counts, and a project's is not enough.
        fault(await client.get("/metrics", headers=ALICE), 403, "forbidden")


async def test_other_methods_are_refused_with_allow_get(env: Env):
    r = await env.client.post("/metrics", headers=ADMIN)
    fault(r, 405, "badMethod")
    assert r.headers["allow"] == "GET"


async def test_metrics_are_not_in_the_openapi_document(env: Env):
    doc = (await env.client.get("/openapi.json")).json()
    assert not [path for path in doc["paths"] if "metrics" in path]
