"""doctor's broker line against the real RabbitMQ that setup starts (issue 12): the
agent's own credentials pass; a wrong password, a vhost that is not there and a port
nobody listens on each fail with what the broker said."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agent.adapters.amqp_probe import check_broker
from agent.config import AmqpConfig
from tests.support.broker import broker_answers

pytestmark = pytest.mark.integration

SECRET = Path("/etc/compute-agent/amqp.secret")


@pytest.fixture(scope="module", autouse=True)
def broker_running() -> None:
    if SECRET.exists() and broker_answers():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI: the broker must be running (make setup starts it)")
    pytest.skip("no broker set up here (make setup does it)")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nobody listens there


def test_the_agents_own_credentials_open_its_vhost():
    result = check_broker(AmqpConfig(), "hv1")
    assert result.ok, result.detail
    assert "vhost 'compute' open to 'compute-agent' (RabbitMQ" in result.detail


def test_a_wrong_password_is_refused(tmp_path):
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-password")
    result = check_broker(AmqpConfig(password_file=wrong), "hv1")
    assert not result.ok and "refused user 'compute-agent'" in result.detail
    assert "not-the-password" not in result.detail


def test_a_vhost_that_is_not_there_is_named():
    result = check_broker(AmqpConfig(vhost="no-such-vhost"), "hv1")
    assert not result.ok and "refused vhost 'no-such-vhost'" in result.detail


def test_a_port_nobody_listens_on_is_unreachable():
    result = check_broker(AmqpConfig(url=f"amqp://compute-agent@127.0.0.1:{closed_port()}"), "hv1")
    assert not result.ok and "unreachable" in result.detail
