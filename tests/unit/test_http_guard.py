"""The listener guard's pieces that need no socket (the rest is proven against the real
daemon in tests/integration/test_http_abuse.py): its refusals are whole HTTP answers with
an OpenStack fault body that close the connection, and a flood of them is logged as counts,
not as a line each; and the connection caps leave descriptors for the agent's own work."""

from __future__ import annotations

import json
import resource

from structlog.testing import capture_logs

from agent.adapters import listeners
from agent.adapters.http_guard import RefusalLog, refusal_bytes


def test_a_refusal_is_a_whole_answer_with_a_fault_body_that_closes_the_connection():
    head, body = refusal_bytes(429, "Too many connections open from this address.").split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 429 Too Many Requests"
    assert {"Connection: close", "Content-Type: application/json", "Retry-After: 5",
            f"Content-Length: {len(body)}"} <= set(lines[1:])
    assert json.loads(body) == {"overLimit": {"code": 429, "message":
                                              "Too many connections open from this address."}}
    assert b"Retry-After" not in refusal_bytes(414, "Request URI too long.")


def test_a_flood_of_refusals_is_logged_once_per_status_and_interval_with_a_count():
    now = [0.0]
    refusals = RefusalLog(interval_s=10, clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(500):
            refusals.refused(429, "per address")
        refusals.refused(414, "uri")
        now[0] = 10.5
        refusals.refused(429, "per address")
    assert [(e["status"], e["count"]) for e in logs] == [(429, 1), (414, 1), (429, 500)]


def test_connection_caps_leave_descriptors_for_the_agents_own_work(monkeypatch):
    """The soft RLIMIT_NOFILE is raised to the hard one, and each listener's cap is cut so
    that FD_RESERVE descriptors stay free whatever clients hold (logged when cut)."""
    limits = {"soft": 1024, "hard": 1024}
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _r: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _r, v: set_to.append(v))
    with capture_logs() as logs:
        assert listeners.connections_per_listener(512, 2) == (1024 - listeners.FD_RESERVE) // 2
    assert [e["event"] for e in logs] == ["listeners.connections_capped"] and not set_to
    limits.update(soft=1024, hard=16384)
    assert listeners.connections_per_listener(512, 2) == 512
    assert set_to == [(16384, 16384)]
