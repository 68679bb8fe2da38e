"""The fleet's wire format (agent/model/fleet.py): versioned, strict, and its errors name
fields, never the content of a message (a job may carry secrets)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from agent.model.fleet import (
    MAX_MESSAGE_BYTES,
    EventMessage,
    Heartbeat,
    InvalidMessage,
    JobMessage,
    decode,
    encode,
)
from agent.model.job import JobKind

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def a_job() -> JobMessage:
    return JobMessage(job_id=uuid.uuid4(), server_id=uuid.uuid4(), kind=JobKind.CREATE,
                      payload_ref="jobs/1", seq=7)


def a_heartbeat(**changes) -> Heartbeat:
    fields = dict(host="hv1.example", vcpus=2, ram_mb=2048, disk_total_gb=100, disk_used_gb=3,
                  running_servers=1, virt_type="qemu", images=["busybox"], sent_at=NOW, interval_s=10)
    return Heartbeat(**{**fields, **changes})


@pytest.mark.parametrize("message", [
    a_job(),
    EventMessage(host="hv1", seq=1, server_id=uuid.uuid4(), status="ACTIVE", power_state=1, at=NOW),
    a_heartbeat(),
])
def test_every_message_survives_the_wire_with_its_version(message):
    body = encode(message)
    assert json.loads(body)["v"] == 1
    assert decode(type(message), body) == message


def body_of(message, **changes) -> bytes:
    data = json.loads(encode(message))
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (b"{SECRET", "not JSON"),
    (b'["SECRET"]', "not a JSON object"),
    (b"\xff\xfeSECRET", "not JSON"),
    (body_of(a_job(), v=2), "unsupported version"),
    (body_of(a_job(), v=None), "unsupported version"),
    (body_of(a_job(), v="1"), "unsupported version"),
    (body_of(a_job(), password="SECRET"), "password"),
    (body_of(a_job(), kind="SECRET"), "kind"),
    (body_of(a_job(), job_id="SECRET"), "job_id"),
    (body_of(a_job(), seq=-1), "seq"),
    (b" " * (MAX_MESSAGE_BYTES + 1), "more than"),
])
def test_an_invalid_job_is_refused_naming_the_reason_but_not_the_content(body, reason):
    with pytest.raises(InvalidMessage, match=reason) as e:
        decode(JobMessage, body)
    assert "SECRET" not in str(e.value)


def test_an_event_must_carry_an_aware_time_a_known_status_and_a_positive_seq():
    event = EventMessage(host="hv1", seq=1, server_id=uuid.uuid4(), status="ACTIVE", power_state=1,
                         at=NOW)
    for changes, field in [({"at": "2026-12-01T12:00:00"}, "at"), ({"status": "SLEEPING"}, "status"),
                           ({"seq": 0}, "seq"), ({"power_state": 2}, "power_state")]:
        with pytest.raises(InvalidMessage, match=field):
            decode(EventMessage, body_of(event, **changes))


@pytest.mark.parametrize("host", ["", "a b", "hv.*", "hv#", "-hv", "hv.", "x" * 201])
def test_a_host_name_that_cannot_be_a_routing_key_word_is_refused(host):
    with pytest.raises(ValueError, match="host"):
        a_heartbeat(host=host)


def test_a_heartbeat_of_another_kind_is_not_a_job():
    with pytest.raises(InvalidMessage, match="invalid JobMessage"):
        decode(JobMessage, encode(a_heartbeat()))


def test_a_message_full_of_unknown_fields_gets_a_short_reason():
    body = body_of(a_job(), **{f"field{i}_{'x' * 500}": 1 for i in range(50)})
    with pytest.raises(InvalidMessage, match="and 42 more") as e:
        decode(JobMessage, body)
    assert len(str(e.value)) < 1000
