"""doctor's broker line (fleet mode): reachable, credentials accepted, vhost open, each
failure named with its fix, and never the password. The real broker: tests/integration."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import aiormq
import pytest

from agent.adapters.amqp_probe import check_broker
from agent.adapters.host_checks import host_checks
from agent.config import AmqpConfig, Config

PASSWORD = "s3cr3t-pw-never-shown"


@pytest.fixture
def amqp(tmp_path: Path) -> AmqpConfig:
    secret = tmp_path / "amqp.secret"
    secret.write_text(PASSWORD + "\n")
    return AmqpConfig(url="amqp://agent@broker.example:5672", vhost="fleet", password_file=secret)


def connecting(outcome: BaseException | None):
    """A stand-in for aio_pika.connect: raises `outcome`, or gives an open connection."""
    seen: dict = {}

    async def connect(**kwargs):
        seen.update(kwargs)
        if outcome is not None:
            raise outcome

        async def close() -> None:
            seen["closed"] = True

        server = SimpleNamespace(server_properties={"product": b"RabbitMQ", "version": b"3.10.8"})
        transport = SimpleNamespace(connection=server)
        return SimpleNamespace(transport=transport, close=close)

    return connect, seen


def test_a_broker_that_lets_us_into_our_vhost_passes_and_the_connection_is_closed(amqp):
    connect, seen = connecting(None)
    result = check_broker(amqp, "hv1", connect)
    assert result.ok
    assert result.detail == "amqp://broker.example:5672 vhost 'fleet' open to 'agent' (RabbitMQ 3.10.8)"
    assert (seen["login"], seen["password"], seen["virtualhost"]) == ("agent", PASSWORD, "fleet")
    assert seen["closed"]


@pytest.mark.parametrize(("error", "says", "fix"), [
    (aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED"), "refused user 'agent'",
     "setup-rabbitmq.sh"),
    (aiormq.exceptions.InvalidFrameError("Connection.Close"), "refused vhost 'fleet'", "[amqp] vhost"),
    (aiormq.exceptions.AMQPConnectionError(111, f"Connect call failed {PASSWORD}"),
     "amqp://broker.example:5672 unreachable", "start the broker"),
    (TimeoutError(), "unreachable", "[amqp] url"),
])
def test_each_failure_says_what_the_broker_refused_and_the_fix_without_the_password(amqp, error, says, fix):
    result = check_broker(amqp, "hv1", connecting(error)[0])
    assert not result.ok and result.required
    assert says in result.detail and fix in result.fix
    assert PASSWORD not in result.detail + result.fix


def test_an_unreadable_password_file_fails_with_the_setup_fix(tmp_path):
    cfg = AmqpConfig(password_file=tmp_path / "missing.secret")
    result = check_broker(cfg, "hv1", connecting(None)[0])
    assert not result.ok
    assert "password_file" in result.detail and "setup-rabbitmq.sh" in result.fix


def test_doctor_checks_the_broker_only_in_fleet_mode(amqp):
    single = Config(state_dir=Path("/srv/agent"))
    fleet = Config(state_dir=Path("/srv/agent"), amqp=amqp)
    assert "broker" not in [name for name, _ in host_checks(single)]
    assert [name for name, _ in host_checks(fleet)][-1] == "broker"
