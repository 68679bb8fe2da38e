"""Power-state monitor (kubevirt virt-handler style): an event only queues a server id;
the handler re-reads desired state (the store) and actual state (libvirt) and brings
them together. The hypervisor is the authority on power; the store on intent.

- A guest that powered itself off shows SHUTOFF (or is deleted, for shutdown_terminate).
- While a task is in flight (reboot, stop, ...) only power_state is recorded: the
  workflow owns the status then, so a reboot never shows a false SHUTOFF.
- While libvirt cannot be reached, settled servers show UNKNOWN; after the reconnect a
  resync shows their true states again.
- A periodic resync and the start-up reconcile catch anything an event missed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog

from agent.core.metrics import Metrics
from agent.errors import DomainNotFound, HypervisorError, StaleServer
from agent.model.domain import PowerState
from agent.model.job import Job, JobKind
from agent.model.server import Fault, Server
from agent.model.states import TaskState, VmState
from agent.protocols import Hypervisor, ServerExpectation, Store

log = structlog.get_logger("agent.monitor")

_OFF = {PowerState.SHUTDOWN, PowerState.CRASHED, PowerState.NOSTATE}
# Events that state the power themselves. libvirt sends "shutdown" once the guest has
# finished powering off; the domain's state cannot be read until libvirt has torn QEMU
# down (it holds the domain meanwhile: 0.6-1.3 s under TCG, measured by bench figure 4),
# so the event is taken as the power state. The "stopped" event that follows is re-read.
_POWER_OF_EVENT = {"shutdown": PowerState.SHUTDOWN}
# Settled states whose status follows the guest's power (others are sticky: ERROR stays
# until an action; SUSPENDED and RESCUED are owned by their workflows).
_FOLLOWS_POWER = {VmState.ACTIVE, VmState.STOPPED, VmState.UNKNOWN}


def _vanishing_recorded(server: Server) -> bool:
    """The vanished domain is already on record: each periodic resync finds it gone again,
    and writing it again would add an event, a new fault and a changed server (for the
    list's cache, the webhooks and the fleet) per server every resync."""
    return server.vm_state is VmState.UNKNOWN and server.power_state is PowerState.NOSTATE \
        and server.fault is not None


class PowerMonitor:
    def __init__(self, store: Store, hypervisor: Hypervisor, kick: Callable[[UUID], None],
                 resync_interval_s: float = 60.0,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.hypervisor = hypervisor
        self.kick = kick
        self.resync_interval_s = resync_interval_s
        self.now = now
        self.connected = True
        self._queue: asyncio.Queue[UUID] = asyncio.Queue()
        self._queued: set[UUID] = set()
        self.metrics = metrics or Metrics()
        # When an event for a server arrived that no write has answered yet (for the lag).
        self._event_at: dict[UUID, float] = {}
        self._told: dict[UUID, PowerState] = {}  # power stated by the latest event

    # -- inputs (loop thread) -------------------------------------------------------------
    def notify(self, server_id: UUID, reason: str = "event") -> None:
        if reason != "resync":
            self._event_at.setdefault(server_id, time.monotonic())
        if reason in _POWER_OF_EVENT:
            self._told[server_id] = _POWER_OF_EVENT[reason]
        else:  # a later event (or a resync) is answered by reading libvirt again
            self._told.pop(server_id, None)
        if server_id not in self._queued:
            self._queued.add(server_id)
            self._queue.put_nowait(server_id)

    async def connection_changed(self, up: bool) -> None:
        self.connected = up
        self.metrics.libvirt_connected.set(1 if up else 0)
        if not up:
            await self._mark_unknown()
        self.resync()

    def resync(self) -> int:
        servers = [s for s in self.store.list_servers() if s.deleted_at is None]
        for s in servers:
            self.notify(s.id, "resync")
        return len(servers)

    # -- the handler ------------------------------------------------------------------------
    async def run(self) -> None:
        """Handle queued servers until cancelled; resync periodically as a backstop."""
        resync = asyncio.create_task(self._resync_forever())
        try:
            while True:
                server_id = await self._queue.get()
                self._queued.discard(server_id)
                try:
                    await self.reconcile(server_id)
                except StaleServer:
                    self.notify(server_id)  # changed under us: look again
                    continue  # the event is still unanswered: its lag runs on
                except Exception as e:  # one bad server must not stop the monitor
                    log.error("monitor.reconcile_failed", server_id=str(server_id),
                              error=type(e).__name__)
                self._event_at.pop(server_id, None)  # handled with nothing to write
        finally:
            resync.cancel()

    async def idle(self) -> None:
        while not self._queue.empty() or self._queued:
            await asyncio.sleep(0.01)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval_s)
            self.resync()

    async def reconcile(self, server_id: UUID) -> None:
        server = self.store.get_server(server_id)
        if server is None or server.deleted_at is not None:
            return
        told = self._told.pop(server_id, None)
        if told is not None:
            await self._apply(server, told)
            return
        try:
            power = await asyncio.to_thread(self.hypervisor.power_state, server_id)
        except DomainNotFound:
            if server.task_state is None and server.vm_state in _FOLLOWS_POWER \
                    and not _vanishing_recorded(server):
                await self._update(server, {"vm_state": VmState.UNKNOWN, "power_state": PowerState.NOSTATE,
                                      "fault": self._fault("the guest's domain vanished from "
                                                           "the hypervisor")},
                             "domain vanished")
            return
        except HypervisorError:
            # Unreachable: connection_changed(False) showed UNKNOWN already, and the
            # reconnect (or the periodic resync) brings this server back here.
            return
        await self._apply(server, power)

    async def _apply(self, server: Server, power: PowerState) -> None:
        if server.task_state is TaskState.SPAWNING:
            return  # a build records the power state itself, with its last step
        changes: dict[str, Any] = {}
        cause = "power state"
        if power != server.power_state:
            changes["power_state"] = power
        if server.task_state is None and server.vm_state in _FOLLOWS_POWER:
            if power in _OFF and server.vm_state is not VmState.STOPPED:
                if server.shutdown_terminate and server.vm_state is VmState.ACTIVE:
                    await self._terminate(server)
                    return
                changes.update(vm_state=VmState.STOPPED, fault=None)
                cause = "guest powered off"
            elif power in (PowerState.RUNNING, PowerState.PAUSED) and \
                    server.vm_state is not VmState.ACTIVE:
                changes.update(vm_state=VmState.ACTIVE, fault=None)
                cause = "guest running"
        if changes:
            await self._update(server, changes, cause)

    async def _update(self, server: Server, changes: dict[str, Any], cause: str) -> None:
        await self.store.update_server(server.id, changes, cause=cause, expect=ServerExpectation(
            vm_state=server.vm_state, task_state=server.task_state))
        self._event_answered(server.id)
        log.info("monitor.changed", server_id=str(server.id), cause=cause,
                 **{k: str(v) for k, v in changes.items() if k != "fault"})

    async def _terminate(self, server: Server) -> None:
        """shutdown_terminate: a guest that powers itself off is deleted."""
        now = self.now()
        job = Job(id=uuid.uuid4(), server_id=server.id, kind=JobKind.DELETE, created_at=now,
                  updated_at=now)
        await self.store.add_job(job, {"task_state": TaskState.DELETING,
                                 "power_state": PowerState.SHUTDOWN},
                           cause="guest powered off: shutdown_terminate",
                           expect=ServerExpectation(vm_state=server.vm_state,
                                                    task_state=server.task_state))
        self._event_answered(server.id)
        self.kick(server.id)

    async def _mark_unknown(self) -> None:
        for server in self.store.list_servers():
            if server.task_state is None and server.vm_state in _FOLLOWS_POWER \
                    and server.vm_state is not VmState.UNKNOWN:
                try:
                    await self._update(server, {"vm_state": VmState.UNKNOWN},
                                 "libvirt connection lost")
                except StaleServer:
                    continue

    def _event_answered(self, server_id: UUID) -> None:
        received = self._event_at.pop(server_id, None)
        if received is not None:
            self.metrics.event_lag.observe(time.monotonic() - received)

    def _fault(self, message: str) -> Fault:
        return Fault(code=500, message=message, created=self.now())
