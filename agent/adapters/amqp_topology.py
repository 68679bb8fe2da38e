"""The fleet's broker as the bus sees it without the AMQP client: the names and arguments
of what it declares (see agent/adapters/amqp_bus.py for the topology), and its settings
(the [amqp] config with the password read and the AMQP heartbeat to negotiate).
No aio-pika here: doctor and the wiring read these without loading the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.config import AmqpConfig
from agent.errors import ConfigError

FLEET_EXCHANGE = "compute.fleet"
DEAD_LETTER_EXCHANGE = "compute.dlx"
DEAD_LETTER_QUEUE = "compute.dead"
EVENTS_QUEUE = "fleet.events"
HEARTBEATS_QUEUE = "fleet.heartbeats"
JOB_DELIVERY_LIMIT = 20  # then the job is dead-lettered (a poison job must not loop forever)
HANDLER_RETRY_DELAY_S = 1.0  # a failed handler's message goes back after this
HEARTBEAT_TTL_MS = 60_000  # a heartbeat nobody read within a minute says nothing anymore
HEARTBEATS_MAX = 10_000
PUBLISH_TIMEOUT_S = 30.0  # a confirm that never comes: treat as lost and send again
RETRY_PAUSE_S = (0.05, 2.0)  # between publish attempts on a dying link: first, cap
# RabbitMQ 3.10 (Ra 2.2) writes a new quorum queue's member name to disk (names.dets)
# about a second after the declare (its dets write cache: 3 s at most). Killed before
# that, the broker comes back with the member unknown, starts it as a new empty one that
# waits for an election nobody triggers: the queue stays leaderless, what it held is
# orphaned. So a queue this link created is used only after this long.
NEW_QUEUE_SETTLE_S = 4.0

QUORUM = {"x-queue-type": "quorum"}
DEAD_LETTERED = {**QUORUM, "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                 "x-delivery-limit": JOB_DELIVERY_LIMIT}
JOB_QUEUE_ARGS = DEAD_LETTERED
EVENTS_QUEUE_ARGS = {**DEAD_LETTERED, "x-single-active-consumer": True}
HEARTBEATS_QUEUE_ARGS = {**DEAD_LETTERED, "x-message-ttl": HEARTBEAT_TTL_MS,
                         "x-max-length": HEARTBEATS_MAX, "x-overflow": "drop-head"}


def job_queue(host: str) -> str:
    return f"compute.{host}"


def amqp_heartbeat(interval_s: int) -> int:
    """The AMQP heartbeat timeout to negotiate so that a dead connection is noticed within
    `interval_s`. aiormq sends a heartbeat every h/2 s and gives up on a peer silent for
    (h + 1) * 3 s, checked every h/2 s: that is at most interval_s when
    h <= (interval_s - 3) / 3.5 (h = 2 for the default 10 s). Never below 1 s (0 would
    turn heartbeats off)."""
    return max(1, int((interval_s - 3) / 3.5))


def detection_window_s(heartbeat: int) -> float:
    """How long aiormq takes at most to notice a silent peer with this AMQP heartbeat."""
    return (heartbeat + 1) * 3 + max(1, heartbeat // 2)


@dataclass(frozen=True)
class AmqpSettings:
    """What the bus needs: AmqpConfig with the password read and the host resolved."""

    host: str  # this host's fleet name
    broker_host: str
    port: int
    tls: bool
    user: str
    password: str = field(repr=False)
    vhost: str
    heartbeat_s: int = 10
    prefetch: int = 8
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 5.0
    max_pending_publishes: int = 1000

    @classmethod
    def from_config(cls, cfg: AmqpConfig, host: str) -> AmqpSettings:
        parts = urlsplit(cfg.url)
        try:
            password = Path(cfg.password_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"amqp: cannot read password_file {cfg.password_file}: "
                              f"{e.strerror}") from None
        if not password:
            raise ConfigError(f"amqp: password_file {cfg.password_file} is empty")
        return cls(host=cfg.host or host, broker_host=parts.hostname or "",
                   port=parts.port or (5671 if parts.scheme == "amqps" else 5672),
                   tls=parts.scheme == "amqps", user=unquote(parts.username or ""), password=password,
                   vhost=cfg.vhost, heartbeat_s=cfg.heartbeat_s, prefetch=cfg.prefetch,
                   reconnect_initial_s=cfg.reconnect_initial_s, reconnect_max_s=cfg.reconnect_max_s,
                   max_pending_publishes=cfg.max_pending_publishes)
