"""The controller applies what its hosts report (issue 12): the FleetListener's handler.

- A Heartbeat: kept as the host's last (the host is made by its first).
- An EventMessage, by its per-host seq against the last one applied (event_verdict):
  DUPLICATE (a redelivery, a resend): nothing; APPLY: the server's snapshot copied onto
  the controller's row with the seq, in one transaction; GAP (events were lost, or this is
  the first the controller hears of a host with a history): the host is asked for a
  snapshot of every server it holds, then the event is applied as well (a snapshot is
  whole, so applying the newest is right).
- A snapshot of a deleted server: the controller's row is DELETED and its ports released
  (the controller made them: its IPAM), in the same transaction.
- While a job of the server has not reached the host's agent (queued here, or dispatched
  and its ticket not yet fetched), an event keeps the status the controller gave the
  server for that job (an older event must not undo "being deleted" or a reboot just
  asked); its other fields apply.

The handler returns only once committed; the bus acknowledges after that, so a controller
killed mid-way gets the message again and the seq makes it harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from agent.core.fleet_dispatch import DISPATCHED_STEP
from agent.model.fleet import (
    EventMessage,
    EventVerdict,
    Heartbeat,
    ServerSnapshot,
    SnapshotRequest,
    event_verdict,
)
from agent.model.job import JobStatus
from agent.protocols import HostRegistry, JobBus, Store

log = structlog.get_logger("agent.fleet")


class FleetStore(Store, HostRegistry, Protocol):
    """The controller's store: servers and jobs, and its hosts."""


def snapshot_changes(snapshot: ServerSnapshot) -> dict[str, Any]:
    """The Server fields an agent owns, as its snapshot has them (updated_at is the
    controller's own: the time it learnt of the change)."""
    return snapshot.model_dump(exclude={"v", "updated_at"})


class FleetApplier:
    def __init__(self, store: FleetStore, bus: JobBus,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.bus = bus
        self.now = now

    async def __call__(self, message: EventMessage | Heartbeat) -> None:
        if isinstance(message, Heartbeat):
            await self.store.record_heartbeat(message, self.now())
        else:
            await self.apply_event(message)

    async def apply_event(self, event: EventMessage) -> EventVerdict:
        host = self.store.get_host(event.host)
        last = host.last_event_seq if host is not None else None
        verdict = event_verdict(last, event.seq)
        if verdict is EventVerdict.DUPLICATE:
            return verdict
        if verdict is EventVerdict.GAP:
            # Asked before the event is applied: if the request fails, nothing is committed
            # and the event comes again (and asks again), so a gap is never left unasked.
            log.warning("fleet.event_gap", host=event.host, last_applied=last, seq=event.seq)
            await self.bus.request_snapshot(SnapshotRequest(host=event.host, after_seq=last or 0))
        snapshot = event.server
        deleted = snapshot is not None and snapshot.deleted_at is not None
        changes = snapshot_changes(snapshot) if snapshot is not None else None
        if changes and not deleted and self._host_lacks_a_job(event):
            # The host's row does not have the controller's newest job yet (this event is
            # older than its adoption): its status is the controller's until then, the
            # rest (power state, fault, ...) is the host's news.
            changes = {k: v for k, v in changes.items() if k not in ("vm_state", "task_state")}
        applied = await self.store.apply_host_event(
            event.host, event.seq, event.server_id, changes,
            cause=f"host {event.host}", release_ports=deleted)
        if applied is None and snapshot is not None:
            log.warning("fleet.event_for_unknown_server", host=event.host, seq=event.seq,
                        server_id=str(event.server_id))
        return verdict

    def _host_lacks_a_job(self, event: EventMessage) -> bool:
        """Whether a job of the server is not yet dispatched or its ticket not yet fetched."""
        return any(j.status is JobStatus.QUEUED or j.step == DISPATCHED_STEP
                   for j in self.store.jobs_of(event.server_id))
