"""The listener guard's pieces that need no socket (the rest is proven against the real
daemon in tests/integration/test_http_abuse.py): its refusals are whole HTTP answers with
an OpenStack fault body that close the connection, and a flood of them is logged as counts,
not as a line each."""

from __future__ import annotations

import json

from structlog.testing import capture_logs

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
