"""Fields that hold secrets are redacted before a log line is rendered, however nested."""

from agent.log import REDACTED, redact_secrets


def test_secret_fields_are_redacted_at_any_depth():
    event = {"event": "x", "adminPass": "hunter2", "request": {"X-Auth-Token": "tok",
             "personality": [{"path": "/etc/motd", "contents": "c2VjcmV0"}]},
             "root_password_hash": "$6$abc", "server_id": "42"}
    out = redact_secrets(None, "info", event)
    assert out["adminPass"] == REDACTED
    assert out["request"]["X-Auth-Token"] == REDACTED
    assert out["request"]["personality"][0] == {"path": "/etc/motd", "contents": REDACTED}
    assert out["root_password_hash"] == REDACTED
    assert out["server_id"] == "42" and out["event"] == "x"
