"""GET /metrics on the real daemon: after one create of a real guest, the scrape shows the
create's job duration, its injection batch, an ACTIVE server and libvirt connected; a
project token is refused on TCP; the unix socket's default context may read it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import IMAGE_ID
from tests.support.daemon import TOKENS, Daemon, destroy_domains

ADMIN_TOKEN = "tok-admin-0123456789"
EXTRA_CONFIG = (
    'unix_socket_project = "project-alice"\n'
    f'[[tokens]]\ntoken = "{ADMIN_TOKEN}"\nproject_id = "project-admin"\nuser_id = "root"\n'
    "admin = true\n")


@pytest.fixture
def metrics_daemon(guest_dir) -> Iterator[Daemon]:
    d = Daemon(guest_dir / "state", extra_config=EXTRA_CONFIG)
    d.start()
    yield d
    d.kill()
    destroy_domains(d.state_dir)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, parsed as Prometheus would."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(daemon: Daemon) -> dict:
    r = httpx.get(daemon.url + "/metrics", headers={"X-Auth-Token": ADMIN_TOKEN}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


WRITES = "compute_agent_store_write_transactions_total"
MAX_WRITES_PER_BUILD = 7  # the POST, the job's start, its steps, the port ACTIVE, its end


def test_one_create_shows_in_the_metrics(metrics_daemon):
    """...and costs at most MAX_WRITES_PER_BUILD write transactions (fsyncs) in all."""
    daemon = metrics_daemon
    writes_before = value(scrape(daemon), WRITES)
    with daemon.client() as api:
        r = api.post("/servers", json={"server": {"name": "metrics-1", "imageRef": IMAGE_ID,
                                                  "flavorRef": "1"}})
        assert r.status_code == 202, r.text
        server_id = r.json()["server"]["id"]
    server = daemon.wait_status(server_id, {"ACTIVE", "ERROR"})
    assert server["status"] == "ACTIVE", server.get("fault")

    # The job's sample lands as its workflow returns, a moment after ACTIVE is written.
    deadline = time.monotonic() + 60
    found = scrape(daemon)
    while value(found, "compute_agent_job_duration_seconds_count", kind="create",
                outcome="succeeded") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        found = scrape(daemon)
    assert value(found, "compute_agent_job_duration_seconds_count", kind="create",
                 outcome="succeeded") == 1
    assert value(found, "compute_agent_jobs_in_progress", kind="create") == 0
    writes = value(found, WRITES) - writes_before
    print(f"write transactions for one build: {writes:.0f}")
    assert 0 < writes <= MAX_WRITES_PER_BUILD
    assert value(found, "compute_agent_servers", status="ACTIVE") >= 1
    assert value(found, "compute_agent_libvirt_connected") == 1
    assert value(found, "compute_agent_injection_batch_duration_seconds_count") >= 1
    assert value(found, "compute_agent_injection_batch_size_sum") >= 1
    assert value(found, "compute_agent_api_request_duration_seconds_count", method="POST",
                 route="/v2.1/servers", status_class="2xx") == 1

    refused = httpx.get(daemon.url + "/metrics", headers={"X-Auth-Token": TOKENS["alice"][0]},
                        timeout=30)
    assert refused.status_code == 403 and "compute_agent" not in refused.text

    socket_path = daemon.state_dir / "api.sock"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=30) as local:
        r = local.get("http://agent/metrics")
    assert r.status_code == 200, r.text
    assert value(samples(r.text), "compute_agent_servers", status="ACTIVE") >= 1
