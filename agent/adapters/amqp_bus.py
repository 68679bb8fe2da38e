"""The fleet's broker: RabbitMQ over AMQP 0-9-1 with aio-pika (issue 12).

One connection, one channel with publisher confirms, re-established after any loss with
exponential backoff (with jitter); AMQP heartbeats (negotiated from `heartbeat_s`, see
amqp_heartbeat) notice a silent peer within `heartbeat_s` (7 s at least). While
disconnected, publishers wait (at most `max_pending_publishes` at once; more callers
queue for a slot) and publish once the broker is back, until it confirms: nothing is
dropped. A publish whose confirm was lost is sent again, so receivers get it at least
once: a job's id and an event's per-host seq make the duplicate harmless.

Topology (declared by whoever connects; identical arguments on every side):
  compute.<host>   quorum queue, jobs for one host (default exchange, routing key = name);
                   declared by that host's agent only, so a job for an unknown host is
                   unroutable (mandatory) and refused, not lost.
  compute.fleet    topic exchange: event.<host> -> fleet.events (quorum, single active
                   consumer: one controller applies them in order), heartbeat.<host> ->
                   fleet.heartbeats (quorum, bounded, old heartbeats expire).
  compute.dlx      fanout exchange -> compute.dead (quorum): invalid messages, and jobs
                   delivered JOB_DELIVERY_LIMIT times without their handler succeeding.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

from agent.adapters.amqp_topology import (  # noqa: F401 - re-exported for callers of the bus
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEAD_LETTERED,
    EVENTS_QUEUE,
    EVENTS_QUEUE_ARGS,
    FLEET_EXCHANGE,
    HANDLER_RETRY_DELAY_S,
    HEARTBEAT_TTL_MS,
    HEARTBEATS_MAX,
    HEARTBEATS_QUEUE,
    HEARTBEATS_QUEUE_ARGS,
    JOB_DELIVERY_LIMIT,
    JOB_QUEUE_ARGS,
    NEW_QUEUE_SETTLE_S,
    PUBLISH_TIMEOUT_S,
    QUORUM,
    RETRY_PAUSE_S,
    AmqpSettings,
    amqp_heartbeat,
    detection_window_s,
    job_queue,
)
from agent.errors import BusClosed, JobUnroutable, Unroutable
from agent.model.fleet import (
    EventMessage,
    Heartbeat,
    InvalidMessage,
    JobMessage,
    SnapshotRequest,
    _Wire,
    decode,
    encode,
)
from agent.protocols.messaging import JobHandler

log = structlog.get_logger("agent.amqp")

# What a lost connection or channel looks like from aio-pika/aiormq while publishing.
LINK_ERRORS = (AMQPError, aiormq.exceptions.AMQPError, ChannelInvalidStateError, ConnectionError,
               OSError, asyncio.TimeoutError)

M = TypeVar("M", bound=_Wire)

# The AMQP message type of what travels on a host's job queue: the body is decoded by it.
JOB_TYPE = "job"
SNAPSHOT_TYPE = "snapshot"
JOB_QUEUE_KINDS: dict[str, type[_Wire]] = {JOB_TYPE: JobMessage, SNAPSHOT_TYPE: SnapshotRequest}


def _we_are_cancelled() -> bool:
    """Whether the running task itself is being cancelled (not a future inside aiormq)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(frozen=True)
class _Link:
    """One live connection's channel and exchanges; replaced as a whole on reconnect."""

    connection: AbstractConnection
    channel: AbstractChannel
    fleet: AbstractExchange

    @property
    def usable(self) -> bool:
        return not self.channel.is_closed


Starter = Callable[[_Link], Awaitable[None]]


class AmqpBus:
    """JobBus, FleetPublisher and FleetListener (agent/protocols/) on one RabbitMQ link."""

    def __init__(self, settings: AmqpSettings) -> None:
        self._s = settings
        self._link: _Link | None = None
        self._changed = asyncio.Event()  # set when the link comes up, or on close
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._starters: list[Starter] = []
        self._starters_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.max_pending_publishes)
        self.connects = 0  # how many times a link came up (1 + reconnects)
        # Deliveries settled: acked after the handler, requeued after it failed, dead-lettered.
        self.settled = {"acked": 0, "requeued": 0, "dead_lettered": 0}

    # --- lifecycle ---

    async def start(self) -> None:
        """Connect in the background (and reconnect forever); returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="amqp-link")

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._usable_link()

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.usable

    async def close(self) -> None:
        """Stop reconnecting and close the link; waiting publishers get BusClosed."""
        self._closing = True
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self._s.reconnect_initial_s
        while not self._closing:
            try:
                await self._serve_one_connection()
                delay = self._s.reconnect_initial_s  # it was up: start the backoff afresh
                log.warning("amqp.connection_lost", host=self._s.host, broker=self._s.broker_host)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # anything the broker or network does: retry with backoff
                log.warning("amqp.connect_failed", broker=self._s.broker_host,
                            error=self._describe(e), retry_in_s=round(delay, 2))
            if not self._closing:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, self._s.reconnect_max_s)

    async def _serve_one_connection(self) -> None:
        """Connect, declare, start the consumers, publish the link; return when it is lost."""
        connection = None
        lost = asyncio.Event()
        try:
            connection = await aio_pika.connect(
                host=self._s.broker_host, port=self._s.port, login=self._s.user,
                password=self._s.password, virtualhost=self._s.vhost, ssl=self._s.tls,
                timeout=max(5.0, self._s.heartbeat_s), heartbeat=amqp_heartbeat(self._s.heartbeat_s),
                client_properties={"connection_name": f"compute-agent {self._s.host}"})
            connection.close_callbacks.add(lambda *_: lost.set())
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            channel.close_callbacks.add(lambda *_: lost.set())
            await channel.set_qos(prefetch_count=self._s.prefetch)
            link = _Link(connection, channel, await self._declare(connection, channel))
            async with self._starters_lock:
                for start in self._starters:
                    await start(link)
                self._link = link
            self.connects += 1
            self._changed.set()
            log.info("amqp.connected", host=self._s.host, broker=self._s.broker_host,
                     vhost=self._s.vhost, amqp_heartbeat_s=amqp_heartbeat(self._s.heartbeat_s))
            await lost.wait()
        finally:
            self._link = None
            if not self._closing:  # close() set it to wake waiting publishers
                self._changed.clear()
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()

    def _describe(self, e: BaseException) -> str:
        """An error's type and text without the password (some errors quote the URL)."""
        return f"{type(e).__name__}: {e}".replace(self._s.password, "***")[:300]

    async def _declare(self, connection: AbstractConnection, channel: AbstractChannel) -> AbstractExchange:
        kinds = aio_pika.ExchangeType
        created: list[str] = []
        dlx = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, kinds.FANOUT, durable=True)
        dead = await self._declare_queue(connection, channel, DEAD_LETTER_QUEUE, QUORUM, created)
        await dead.bind(dlx)
        fleet = await channel.declare_exchange(FLEET_EXCHANGE, kinds.TOPIC, durable=True)
        events = await self._declare_queue(connection, channel, EVENTS_QUEUE, EVENTS_QUEUE_ARGS, created)
        await events.bind(fleet, "event.*")
        beats = await self._declare_queue(connection, channel, HEARTBEATS_QUEUE, HEARTBEATS_QUEUE_ARGS,
                                          created)
        await beats.bind(fleet, "heartbeat.*")
        await self._settle_new_queues(created)
        return fleet

    async def _declare_queue(self, connection: AbstractConnection, channel: AbstractChannel, name: str,
                             arguments: dict[str, Any], created: list[str]) -> AbstractQueue:
        """Declare a durable queue; append its name to `created` if it did not exist."""
        if not await self._queue_exists(connection, name):
            created.append(name)
        return await channel.declare_queue(name, durable=True, arguments=arguments)

    @staticmethod
    async def _queue_exists(connection: AbstractConnection, name: str) -> bool:
        """A passive declare, on a channel of its own: a missing queue closes the channel
        it was asked on, and the link's channel must stay open."""
        probe = await connection.channel(publisher_confirms=False)
        try:
            await probe.declare_queue(name, passive=True)
            return True
        except ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(*LINK_ERRORS):
                await probe.close()

    async def _settle_new_queues(self, created: list[str]) -> None:
        """Give queues this link created the time the broker needs to make them survive a
        crash (NEW_QUEUE_SETTLE_S) before anyone is told the link is up."""
        if created:
            log.info("amqp.queues_created", queues=created, settle_s=NEW_QUEUE_SETTLE_S)
            await asyncio.sleep(NEW_QUEUE_SETTLE_S)

    async def _usable_link(self) -> _Link:
        while True:
            if self._closing:
                raise BusClosed("the broker connection is closed")
            link = self._link
            if link is not None and link.usable:
                return link
            await self._changed.wait()
            if self._link is None or not self._link.usable:
                await asyncio.sleep(RETRY_PAUSE_S[0])  # the link task has not noticed yet

    # --- publishing ---

    async def _publish(self, message: _Wire, routing_key: str, *, fleet: bool, persistent: bool,
                       mandatory: bool, message_id: str, kind: str | None = None) -> None:
        body = encode(message)
        pause = RETRY_PAUSE_S[0]
        async with self._slots:
            while True:
                link = await self._usable_link()
                exchange = link.fleet if fleet else link.channel.default_exchange
                try:
                    await exchange.publish(
                        aio_pika.Message(body, content_type="application/json", message_id=message_id,
                                         type=kind or type(message).__name__,
                                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent
                                         else aio_pika.DeliveryMode.NOT_PERSISTENT),
                        routing_key, mandatory=mandatory, timeout=PUBLISH_TIMEOUT_S)
                    return
                except PublishError:
                    raise Unroutable(f"no queue for routing key {routing_key}") from None
                except DeliveryError:  # nacked: the broker could not take it now
                    log.warning("amqp.publish_nacked", routing_key=routing_key, retry_in_s=pause)
                except LINK_ERRORS as e:
                    log.info("amqp.publish_retry", routing_key=routing_key, error=self._describe(e))
                except asyncio.CancelledError:
                    if _we_are_cancelled():
                        raise
                    # aiormq cancels a lost connection's pending confirms: not ours to obey.
                    log.info("amqp.publish_retry", routing_key=routing_key, error="confirm lost")
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_S[1])

    async def publish_job(self, host: str, job: JobMessage) -> None:
        try:
            await self._publish(job, job_queue(host), fleet=False, persistent=True, mandatory=True,
                                message_id=str(job.job_id), kind=JOB_TYPE)
        except Unroutable:
            raise JobUnroutable(f"host {host} has no job queue ({job_queue(host)})") from None

    async def request_snapshot(self, request: SnapshotRequest) -> None:
        try:
            await self._publish(request, job_queue(request.host), fleet=False, persistent=True,
                                mandatory=True, message_id=f"snapshot:{request.host}:{request.after_seq}",
                                kind=SNAPSHOT_TYPE)
        except Unroutable:
            raise JobUnroutable(f"host {request.host} has no job queue "
                                f"({job_queue(request.host)})") from None

    async def publish_event(self, event: EventMessage) -> None:
        await self._publish(event, f"event.{event.host}", fleet=True, persistent=True,
                            mandatory=True, message_id=f"{event.host}:{event.seq}")

    async def publish_heartbeat(self, heartbeat: Heartbeat) -> None:
        await self._publish(heartbeat, f"heartbeat.{heartbeat.host}", fleet=True, persistent=False,
                            mandatory=False, message_id=f"{heartbeat.host}:{heartbeat.sent_at}")

    # --- consuming ---

    async def consume_jobs(self, handler: JobHandler) -> None:
        """Jobs and snapshot requests, each decoded by its AMQP type (JOB_QUEUE_KINDS); a
        message of another type (or none) is dead-lettered as an invalid one."""
        await self._consume(job_queue(self._s.host), JOB_QUEUE_ARGS,
                            lambda message: JOB_QUEUE_KINDS.get(message.type or ""), handler)

    async def consume_fleet(self, handler: Callable[[EventMessage | Heartbeat], Awaitable[None]]) -> None:
        await self._consume(EVENTS_QUEUE, EVENTS_QUEUE_ARGS, lambda _message: EventMessage, handler)
        await self._consume(HEARTBEATS_QUEUE, HEARTBEATS_QUEUE_ARGS, lambda _message: Heartbeat, handler)

    async def _consume(self, queue_name: str, arguments: dict[str, Any],
                       kind_of: Callable[[AbstractIncomingMessage], type[M] | None],
                       handler: Callable[[M], Awaitable[None]]) -> None:
        """Consume `queue_name` now if connected, and again after every reconnect.
        Deliveries are handled one at a time, in order (prefetch only fills the pipe)."""
        in_order = asyncio.Lock()

        async def deliver(message: AbstractIncomingMessage) -> None:
            async with in_order:
                await self._deliver(queue_name, message, kind_of(message), handler)

        async def start(link: _Link) -> None:
            created: list[str] = []
            queue = await self._declare_queue(link.connection, link.channel, queue_name, arguments, created)
            await self._settle_new_queues(created)  # consume_jobs returns once it is safe
            await queue.consume(deliver, no_ack=False)

        async with self._starters_lock:
            self._starters.append(start)
            if self._link is not None and self._link.usable:
                await start(self._link)

    async def _deliver(self, queue: str, message: AbstractIncomingMessage, kind: type[M] | None,
                       handler: Callable[[M], Awaitable[None]]) -> None:
        try:
            if kind is None:  # the sender's text, cut short: a type name, not content
                raise InvalidMessage(f"unknown message type {(message.type or '')[:32]!r}")
            decoded = decode(kind, message.body)
        except InvalidMessage as e:
            # The reason names fields, never their content (a job may carry secrets).
            log.warning("amqp.invalid_message_dead_lettered", queue=queue, reason=str(e),
                        size=len(message.body), redelivered=message.redelivered)
            await self._settle(message.reject(requeue=False), queue, "dead_lettered")
            return
        try:
            await handler(decoded)
        except Exception as e:
            log.warning("amqp.handler_failed_requeued", queue=queue, kind=type(decoded).__name__,
                        job_id=str(getattr(decoded, "job_id", "")) or None,
                        seq=getattr(decoded, "seq", None), error=type(e).__name__)
            await asyncio.sleep(HANDLER_RETRY_DELAY_S)
            await self._settle(message.nack(requeue=True), queue, "requeued")
            return
        await self._settle(message.ack(), queue, "acked")

    async def _settle(self, settling: Awaitable[None], queue: str, outcome: str) -> None:
        """Ack/nack/reject; on a lost link the broker redelivers (at least once)."""
        try:
            await settling
        except (*LINK_ERRORS, asyncio.CancelledError) as e:
            if isinstance(e, asyncio.CancelledError) and _we_are_cancelled():
                raise
            log.info("amqp.settle_lost", queue=queue, error=type(e).__name__)
            return
        self.settled[outcome] += 1
