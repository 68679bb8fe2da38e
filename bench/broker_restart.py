"""Figure 10: the fleet's broker SIGKILLed and restarted (issue 12, "broker restart ->
every queued job done").

One agent (AmqpBus with the default [amqp] settings: heartbeat_s 10, reconnect cap 5 s)
consumes its job queue with a handler that holds the first job, so that JOBS jobs wait in
the broker, published and confirmed by a controller's bus; a heartbeat loop runs on the
agent's bus. Then the broker's VM is SIGKILLed (tests/support/broker.py) and started again.
Agent: from the kill until every queued job was handled (after the kill: the held ones
come again, as nothing was acked) and the consumer's bus is connected again. Reference:
from the kill until the broker itself answers again (`rabbitmqctl await_startup`), the
floor no client can beat. One run (it takes the machine's broker away for everyone).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from agent.adapters.amqp_bus import AmqpBus, AmqpSettings, job_queue
from agent.config import AmqpConfig
from agent.core.fleet_heartbeats import send_heartbeats
from agent.model.fleet import EventMessage, Heartbeat, JobMessage
from agent.model.job import JobKind
from bench.context import Context
from bench.report import Figure, progress
from tests.support.broker import broker_answers, kill_broker, start_broker

JOBS = 50
TIMEOUT_S = 300.0


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


async def _measure(host: str) -> dict[str, float | int]:
    cfg = AmqpConfig()
    agent, controller, listener = (AmqpBus(AmqpSettings.from_config(cfg, name))
                                   for name in (host, f"{host}-ctl", f"{host}-lsn"))
    hold = asyncio.Event()
    handled_after_kill: set[uuid.UUID] = set()
    killed: list[float] = []
    beats_after_kill: list[float] = []
    clock = _Clock()

    async def handle(job: JobMessage) -> None:
        if not killed:
            await hold.wait()  # keeps the queue full until the broker dies
            return
        handled_after_kill.add(job.job_id)

    async def listen(message: EventMessage | Heartbeat) -> None:
        if isinstance(message, Heartbeat) and message.host == host and killed \
                and message.sent_at.timestamp() >= killed[0]:
            beats_after_kill.append(clock.now())

    async def read() -> Heartbeat:
        return Heartbeat(host=host, vcpus=2, ram_mb=1024, disk_total_gb=10, disk_used_gb=1,
                         running_servers=0, virt_type="qemu", images=[], sent_at=datetime.now(UTC),
                         interval_s=cfg.heartbeat_s)

    for bus in (agent, controller, listener):
        await bus.start()
        await bus.wait_connected(60)
    await agent.consume_jobs(handle)  # creates the queue (and waits until it is safe)
    await listener.consume_fleet(listen)
    jobs = [JobMessage(job_id=uuid.uuid4(), server_id=uuid.uuid4(), kind=JobKind.CREATE,
                       payload_ref=f"bench/{i}", seq=i) for i in range(1, JOBS + 1)]
    for job in jobs:
        await controller.publish_job(host, job)
    beating = asyncio.create_task(send_heartbeats(agent, read, cfg.heartbeat_s))
    connects_before = agent.connects
    try:
        clock = _Clock()
        await asyncio.to_thread(kill_broker)
        killed.append(datetime.now(UTC).timestamp())
        hold.set()
        await asyncio.to_thread(start_broker)
        broker_back = clock.now()
        async with asyncio.timeout(TIMEOUT_S):
            while not ({j.job_id for j in jobs} <= handled_after_kill and agent.connected
                       and agent.connects > connects_before):
                await asyncio.sleep(0.02)
        all_done = clock.now()
        async with asyncio.timeout(TIMEOUT_S):
            while not beats_after_kill:
                await asyncio.sleep(0.05)
    finally:
        beating.cancel()
        await asyncio.to_thread(start_broker)
        for bus in (agent, controller, listener):
            await bus.close()
    await delete_queue(cfg, host)
    return {"broker_back_s": broker_back, "all_done_s": all_done,
            "first_heartbeat_s": beats_after_kill[0], "jobs": JOBS}


async def delete_queue(cfg: AmqpConfig, host: str) -> None:
    import aio_pika  # the bench's own cleanup; the agent's code never deletes a job queue

    s = AmqpSettings.from_config(cfg, host)
    connection = await aio_pika.connect(host=s.broker_host, port=s.port, login=s.user,
                                        password=s.password, virtualhost=s.vhost)
    try:
        await (await connection.channel()).queue_delete(job_queue(host))
    finally:
        await connection.close()


def broker_restart(_ctx: Context, command: str) -> list[Figure]:
    if not broker_answers():
        raise RuntimeError("RabbitMQ is not running (make setup starts it)")
    host = f"bench-{uuid.uuid4().hex[:8]}"
    progress(f"figure 10: {JOBS} jobs queued, the broker SIGKILLed and restarted")
    m = asyncio.run(_measure(host))
    progress(f"figure 10: broker back at {m['broker_back_s']:.1f} s, every job handled and "
             f"the consumer back at {m['all_done_s']:.1f} s, a fresh heartbeat at "
             f"{m['first_heartbeat_s']:.1f} s")
    return [Figure(
        key="broker_restart", agent_s=float(m["all_done_s"]), reference_s=float(m["broker_back_s"]),
        title=f"10. Broker SIGKILL and restart to every queued job handled ({JOBS}) and the "
              "consumer back (one run)",
        reference_label="the broker itself answering again (rabbitmqctl await_startup)",
        target_max=None, command=command, details=m,
        notes=[f"default [amqp] settings (reconnect cap 5 s); a fresh heartbeat reached the "
               f"controller's listener {m['first_heartbeat_s']:.1f} s after the kill",
               "jobs acked by nobody before the kill (the handler held them) come again"])]
