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


def test_logging_follows_stderr_after_it_was_set_up_on_a_stream_since_closed(monkeypatch, capsys):
    """The CLI run in-process sets logging up while stderr is a test's capture, closed
    afterwards: later lines go to whatever stderr is then, never to the closed stream."""
    import io
    import sys

    from agent.log import configure_logging, get_logger

    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    configure_logging("info", "json")
    monkeypatch.undo()
    captured.close()
    get_logger("test").info("after.close")
    assert "after.close" in capsys.readouterr().err
