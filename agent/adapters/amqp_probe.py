"""`doctor`'s look at the fleet's broker (issue 12): reachable, our credentials accepted,
our vhost open to us. One connection, opened and closed; nothing declared."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq

from agent.adapters.amqp_bus import AmqpSettings
from agent.config import AmqpConfig
from agent.errors import ConfigError
from agent.model.host import CheckResult

NAME = "broker"
PROBE_TIMEOUT_S = 10.0
SETUP_FIX = "run scripts/setup-rabbitmq.sh as root (vhost, user, password file)"

Connect = Callable[..., Awaitable[Any]]


async def probe_broker(s: AmqpSettings, connect: Connect = aio_pika.connect,
                       timeout_s: float = PROBE_TIMEOUT_S) -> CheckResult:
    where = f"{'amqps' if s.tls else 'amqp'}://{s.broker_host}:{s.port}"
    name = {"connection_name": f"compute-agent doctor {s.host}"}
    try:
        async with asyncio.timeout(timeout_s):
            connection = await connect(host=s.broker_host, port=s.port, login=s.user, password=s.password,
                                       virtualhost=s.vhost, ssl=s.tls, timeout=timeout_s,
                                       client_properties=name)
    except aiormq.exceptions.ProbableAuthenticationError:
        return CheckResult(name=NAME, ok=False, detail=f"{where} refused user {s.user!r}: wrong password "
                           "or no such user", fix=f"{SETUP_FIX}; or correct the user in [amqp] url")
    except (aiormq.exceptions.ConnectionNotAllowed, aiormq.exceptions.ProtocolSyntaxError):
        # RabbitMQ answers the open of a vhost it will not give us with a Connection.Close.
        return CheckResult(name=NAME, ok=False, detail=f"{where} refused vhost {s.vhost!r}: it does not "
                           f"exist or user {s.user!r} has no permissions on it",
                           fix=f"{SETUP_FIX}; or correct [amqp] vhost")
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as e:
        error = f"{type(e).__name__}: {e}".replace(s.password, "***")[:200]
        return CheckResult(name=NAME, ok=False, detail=f"{where} unreachable ({error})",
                           fix="start the broker (scripts/setup-rabbitmq.sh); a broker on another "
                               "host must listen beyond loopback (README, Fleet); or correct [amqp] url")
    try:
        underlay = getattr(connection.transport, "connection", None)  # aiormq's connection
        server = getattr(underlay, "server_properties", None) or {}
        product, version = server.get("product", "AMQP broker"), server.get("version", "?")
        product = product.decode() if isinstance(product, bytes) else product
        version = version.decode() if isinstance(version, bytes) else version
    finally:
        await connection.close()
    return CheckResult(name=NAME, ok=True,
                       detail=f"{where} vhost {s.vhost!r} open to {s.user!r} ({product} {version})")


def check_broker(cfg: AmqpConfig, host: str, connect: Connect = aio_pika.connect) -> CheckResult:
    """The [amqp] broker, when one is configured (fleet mode)."""
    try:
        settings = AmqpSettings.from_config(cfg, host)
    except ConfigError as e:
        return CheckResult(name=NAME, ok=False, detail=str(e), fix=SETUP_FIX)
    return asyncio.run(probe_broker(settings, connect))
