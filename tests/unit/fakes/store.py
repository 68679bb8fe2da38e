"""MemoryStore: the Store port in memory (dicts and a lock). It behaves as SqliteStore does,
as tests/integration/test_store_contract.py proves: the same events, compare-and-set,
project scoping, ordering, validation and errors; values round-trip as they would through
the database (datetimes in UTC, payloads through JSON, copies rather than shared dicts)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from agent.errors import (
    InvalidInput,
    IpAddressInUse,
    KeypairExists,
    KeypairNotFound,
    MacAddressInUse,
    PortInUse,
    PortNotFound,
    ServerGroupNotFound,
    ServerNotFound,
    StoreError,
)
from agent.model.fleet import HostRecord
from agent.model.job import Job, JobStatus, StatusEvent
from agent.model.keypair import Keypair, exists_message, not_found_message
from agent.model.network import Port, PortStatus
from agent.model.scheduling import ServerGroup, group_not_found_message
from agent.model.server import Server
from agent.model.states import TaskState, VmState
from agent.protocols import (
    NewServer,
    ServerExpectation,
    check_change_keys,
    check_expect,
    check_new_server,
    check_task,
    job_advanced,
)
from tests.unit.fakes.hosts import MemoryHosts
from tests.unit.fakes.store_fleet import FleetAdoptionMixin

_SERVER_FIELDS = frozenset(Server.model_fields)
_SERVER_FIXED = frozenset({"id", "project_id", "created_at", "updated_at", "reservation_id"})
_JOB_FIELDS = frozenset(Job.model_fields)
_JOB_FIXED = frozenset({"id", "server_id", "kind", "created_at", "updated_at"})
_SERVER_TIMES = ("created_at", "updated_at", "launched_at", "deleted_at")


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    if dt.utcoffset() is None:
        raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
    return dt.astimezone(UTC)


def _stored_server(s: Server) -> Server:
    """The server as the database would give it back: UTC datetimes, own dicts."""
    data = s.model_dump()
    for key in _SERVER_TIMES:
        data[key] = _utc(data[key])
    if data["fault"] is not None:
        data["fault"]["created"] = _utc(data["fault"]["created"])
    return Server.model_validate(data)


def _stored_job(j: Job) -> Job:
    data = j.model_dump()
    try:
        data["payload"] = json.loads(json.dumps(data["payload"], sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"job {j.id}: payload is not JSON-serialisable ({type(e).__name__})") from None
    data["created_at"], data["updated_at"] = _utc(data["created_at"]), _utc(data["updated_at"])
    return Job.model_validate(data)




async def _turn() -> None:
    """A write is a turn of the event loop, as with SqliteStore (its writer thread commits
    while the loop runs others): what a caller checked before a write may change meanwhile."""
    await asyncio.sleep(0)


class MemoryStore(FleetAdoptionMixin, MemoryHosts):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._servers: dict[UUID, Server] = {}
        self._jobs: dict[UUID, Job] = {}  # insertion order breaks created_at ties
        self._events: list[StatusEvent] = []
        self._ports: dict[UUID, Port] = {}
        self._event_listener: Callable[[], None] | None = None
        self._webhook_cursors: dict[str, int] = {}
        self._keypairs: dict[tuple[str, str], Keypair] = {}  # (user_id, name)
        self._keypair_seq = 0
        self._server_groups: dict[UUID, ServerGroup] = {}
        self._closed = False
        self._revision = 0
        self._hosts: dict[str, HostRecord] = {}

    def close(self) -> None:
        self._closed = True

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write: under the lock, and the revision moves on once it succeeded (a failed
        write may have changed nothing, but moving on is always safe)."""
        with self._lock:
            try:
                yield
            finally:
                self._revision += 1

    def revision(self) -> int:
        with self._lock:
            return self._revision

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("state database is closed")

    def _load(self, server_id: UUID) -> Server:
        try:
            return self._servers[server_id]
        except KeyError:
            raise ServerNotFound(f"server {server_id} not found") from None

    def _event(self, server: Server, old_status: str | None, cause: str, at: datetime,
               pending: list[StatusEvent]) -> StatusEvent:
        return StatusEvent(seq=len(self._events) + len(pending) + 1, server_id=server.id,
                           project_id=server.project_id, old_status=old_status,
                           new_status=server.status.value, power_state=int(server.power_state),
                           cause=cause, at=at)

    def _changed(self, current: Server, changes: dict[str, Any], cause: str,
                 pending: list[StatusEvent]) -> Server:
        """The changed server (validated, not yet stored); its event, if any, into pending."""
        now = _now()
        new = Server.model_validate({**current.model_dump(), **changes, "updated_at": now})
        if new.vm_state is VmState.DELETED and new.deleted_at is None:
            new = new.model_copy(update={"deleted_at": now})
        new = _stored_server(new)
        if new.status != current.status:
            pending.append(self._event(new, current.status.value, cause, now, pending))
        return new

    # -- servers --------------------------------------------------------------------------

    async def create_server(self, server: Server, job: Job, ports: Sequence[Port] = ()) -> None:
        await self.create_servers([NewServer(server, job, tuple(ports))])

    async def create_servers(self, batch: Sequence[NewServer]) -> None:
        await _turn()
        for new in batch:
            check_new_server(new)
        rows = [(_stored_server(n.server), _stored_job(n.job)) for n in batch]
        with self._writing():
            self._check_open()
            new_ports = dict(self._ports)
            servers: dict[UUID, Server] = {}
            jobs: dict[UUID, Job] = {}
            events: list[StatusEvent] = []
            for new, (stored, stored_job) in zip(batch, rows, strict=True):
                if stored.id in self._servers or stored.id in servers:
                    raise StoreError("state database: create server failed: "
                                     "UNIQUE constraint failed: servers.id")
                if stored_job.id in self._jobs or stored_job.id in jobs:
                    raise StoreError("state database: create server failed: "
                                     "UNIQUE constraint failed: jobs.id")
                for port in new.ports:  # all or none, as in one transaction
                    if port.created_by_agent:
                        self._insert_port(new_ports, port)
                    else:
                        self._bind_port(new_ports, port)
                servers[stored.id] = stored
                jobs[stored_job.id] = stored_job
                events.append(self._event(stored, None, "create", _now(), events))
            self._ports = new_ports
            self._servers.update(servers)
            self._jobs.update(jobs)
            self._append_events(events)

    def get_server(self, server_id: UUID, project_id: str | None = None) -> Server | None:
        with self._lock:
            self._check_open()
            s = self._servers.get(server_id)
        if s is None or (project_id is not None and s.project_id != project_id):
            return None
        return s.model_copy(deep=True)

    def list_servers(self, project_id: str | None = None, *, changes_since: datetime | None = None,
                     include_deleted: bool = False, image_id: UUID | None = None,
                     flavor_id: str | None = None, reservation_id: str | None = None,
                     marker: UUID | None = None, limit: int | None = None) -> list[Server]:
        since = _utc(changes_since)
        with self._lock:
            self._check_open()
            found = [s for s in self._servers.values()
                     if (project_id is None or s.project_id == project_id)
                     and (image_id is None or str(s.image_id) == str(image_id))
                     and (flavor_id is None or s.flavor_id == flavor_id)
                     and (reservation_id is None or s.reservation_id == reservation_id)
                     and (s.updated_at >= since if since is not None
                          else include_deleted or s.vm_state is not VmState.DELETED)]
        found.sort(key=lambda s: (s.created_at, str(s.id)), reverse=True)
        if marker is not None:
            ids = [s.id for s in found]
            if marker not in ids:
                raise InvalidInput(f"marker [{marker}] not found", "marker")
            found = found[ids.index(marker) + 1:]
        if limit is not None:
            found = found[:max(0, limit)]
        return [s.model_copy(deep=True) for s in found]

    def server_state_counts(self) -> dict[tuple[VmState, TaskState | None], int]:
        with self._lock:
            self._check_open()
            return dict(Counter((s.vm_state, s.task_state) for s in self._servers.values()
                                if s.vm_state is not VmState.DELETED))

    def flavor_counts(self, project_id: str, *, without: UUID | None = None) -> dict[str, int]:
        with self._lock:
            self._check_open()
            return dict(Counter(s.flavor_id for s in self._servers.values()
                                if s.project_id == project_id and s.id != without
                                and s.vm_state is not VmState.DELETED))

    async def update_server(self, server_id: UUID, changes: dict[str, Any], *, cause: str,
                      expect: ServerExpectation | None = None) -> Server:
        await _turn()
        check_change_keys(changes, _SERVER_FIELDS, _SERVER_FIXED, "server")
        with self._writing():
            self._check_open()
            current = self._load(server_id)
            check_expect(current, expect)
            pending: list[StatusEvent] = []
            new = self._changed(current, changes, cause, pending)
            self._servers[server_id] = new
            self._append_events(pending)
            return new.model_copy(deep=True)

    # -- jobs -----------------------------------------------------------------------------

    async def add_job(self, job: Job, server_changes: dict[str, Any] | None = None, *,
                cause: str = "", expect: ServerExpectation | None = None) -> Server:
        await _turn()
        check_change_keys(server_changes or {}, _SERVER_FIELDS, _SERVER_FIXED, "server")
        stored_job = _stored_job(job)
        with self._writing():
            self._check_open()
            current = self._load(job.server_id)
            check_expect(current, expect)
            if job.id in self._jobs:
                raise StoreError("state database: add job failed: UNIQUE constraint failed: jobs.id")
            pending: list[StatusEvent] = []
            new = self._changed(current, server_changes, cause, pending) if server_changes else current
            self._jobs[job.id] = stored_job
            self._servers[new.id] = new
            self._append_events(pending)
            return new.model_copy(deep=True)

    def get_job(self, job_id: UUID) -> Job | None:
        with self._lock:
            self._check_open()
            j = self._jobs.get(job_id)
        return j.model_copy(deep=True) if j is not None else None

    async def update_job(self, job_id: UUID, changes: dict[str, Any]) -> Job:
        await _turn()
        check_change_keys(changes, _JOB_FIELDS, _JOB_FIXED, "job")
        with self._writing():
            self._check_open()
            current = self._jobs.get(job_id)
            if current is None:
                raise StoreError(f"job {job_id} not found")
            new = _stored_job(Job.model_validate({**current.model_dump(), **changes,
                                                  "updated_at": _now()}))
            self._jobs[job_id] = new
            return new.model_copy(deep=True)

    # -- a job's life (see Store) ---------------------------------------------------------

    def _job(self, job_id: UUID) -> Job:
        current = self._jobs.get(job_id)
        if current is None:
            raise StoreError(f"job {job_id} not found")
        return current

    def _put_job(self, new: Job) -> Job:
        self._jobs[new.id] = _stored_job(new)
        return self._jobs[new.id].model_copy(deep=True)

    async def start_job(self, job_id: UUID) -> Job:
        with self._writing():
            self._check_open()
            old = self._job(job_id)
            return self._put_job(old.model_copy(update={
                "status": JobStatus.RUNNING, "attempts": old.attempts + 1, "updated_at": _now()}))

    async def advance(self, job: Job, step: str, server_changes: dict[str, Any] | None,
                      expect_task_state: TaskState | None, *, cause: str = "",
                      end: bool = False) -> Job:
        check_change_keys(server_changes or {}, _SERVER_FIELDS, _SERVER_FIXED, "server")
        with self._writing():
            self._check_open()
            current = self._load(job.server_id)
            check_task(current, expect_task_state)
            pending: list[StatusEvent] = []
            new = self._changed(current, server_changes, cause or step, pending) \
                if server_changes else current
            stored = self._put_job(job_advanced(self._job(job.id), step, _now(),
                                                JobStatus.SUCCEEDED if end else None))
            self._servers[new.id] = new
            self._append_events(pending)
            return stored

    async def end_job(self, job_id: UUID, status: JobStatus, *, error: str = "",
                      server_changes: dict[str, Any] | None = None,
                      expect_task_state: TaskState | None = None, cause: str = "") -> Job:
        check_change_keys(server_changes or {}, _SERVER_FIELDS, _SERVER_FIXED, "server")
        with self._writing():
            self._check_open()
            old = self._job(job_id)
            pending: list[StatusEvent] = []
            if server_changes:
                current = self._load(old.server_id)
                if current.task_state is expect_task_state:
                    self._servers[current.id] = self._changed(
                        current, server_changes, cause or status.value, pending)
            stored = self._put_job(old.model_copy(update={
                "status": status, "error": error, "payload": {}, "updated_at": _now()}))
            self._append_events(pending)
            return stored

    async def pause_job(self, job_id: UUID) -> Job | None:
        with self._writing():
            self._check_open()
            old = self._jobs.get(job_id)
            if old is None:
                return None
            return self._put_job(old.model_copy(update={
                "attempts": max(0, old.attempts - 1), "updated_at": _now()}))

    def unfinished_jobs(self) -> list[Job]:
        with self._lock:
            self._check_open()
            found = [j for j in self._jobs.values()
                     if j.status in (JobStatus.QUEUED, JobStatus.RUNNING)]
        found.sort(key=lambda j: j.created_at)  # stable: insertion order breaks ties
        return [j.model_copy(deep=True) for j in found]

    def jobs_of(self, server_id: UUID) -> list[Job]:
        with self._lock:
            self._check_open()
            found = [j for j in self._jobs.values() if j.server_id == server_id]
        found.sort(key=lambda j: j.created_at)  # stable: insertion order breaks ties
        return [j.model_copy(deep=True) for j in found]

    # -- events ---------------------------------------------------------------------------

    def events_since(self, seq: int, project_id: str | None = None,
                     limit: int = 1000) -> list[StatusEvent]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        with self._lock:
            self._check_open()
            found = [e for e in self._events
                     if e.seq > seq and (project_id is None or e.project_id == project_id)]
        return found[:limit]

    def _append_events(self, events: list[StatusEvent]) -> None:
        """Commit events (the lock held) and, if there were any, tell the listener."""
        self._events.extend(events)
        if events and self._event_listener is not None:
            self._event_listener()  # the lock is reentrant: it may read the events at once

    def set_event_listener(self, listener: Callable[[], None] | None) -> None:
        self._event_listener = listener

    async def webhook_cursor(self, url: str) -> int:
        await _turn()
        with self._writing():
            self._check_open()
            return self._webhook_cursors.setdefault(url, self._events[-1].seq if self._events else 0)

    def peek_webhook_cursor(self, url: str) -> int | None:
        """A test's look at the URL's cursor (None without one), without the write that
        webhook_cursor may make: usable in a synchronous wait condition."""
        with self._lock:
            return self._webhook_cursors.get(url)

    async def advance_webhook_cursor(self, url: str, seq: int) -> None:
        await _turn()
        with self._writing():
            self._check_open()
            self._webhook_cursors[url] = max(seq, self._webhook_cursors.get(url, seq))

    # -- ports ----------------------------------------------------------------------------

    @staticmethod
    def _insert_port(ports: dict[UUID, Port], port: Port) -> None:
        if port.created_at.utcoffset() is None:
            raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
        if port.id in ports:
            raise StoreError(f"state database: add port failed: port {port.id} exists")
        for other in ports.values():
            if other.network_id == port.network_id and other.ip == port.ip:
                raise IpAddressInUse(f"Unable to complete operation for network {port.network_id}. "
                                     f"The IP address {port.ip} is in use.")
            if other.mac == port.mac:
                raise MacAddressInUse(f"Unable to complete operation for network {port.network_id}. "
                                      f"The mac address {port.mac} is in use.")
        ports[port.id] = port.model_copy(update={"created_at": port.created_at.astimezone(UTC)})

    @staticmethod
    def _bind_port(ports: dict[UUID, Port], port: Port) -> None:
        current = ports.get(port.id)
        if current is None:
            raise PortNotFound(f"Port {port.id} could not be found.")
        if current.bound:
            raise PortInUse(f"Port {port.id} is still in use.")
        ports[port.id] = current.model_copy(update={
            "device_id": port.device_id, "device_owner": port.device_owner,
            "device_index": port.device_index})

    async def add_port(self, port: Port) -> None:
        await _turn()
        with self._writing():
            self._check_open()
            self._insert_port(self._ports, port)

    def get_port(self, port_id: UUID) -> Port | None:
        with self._lock:
            self._check_open()
            return self._ports.get(port_id)

    def list_ports(self, *, network_id: UUID | None = None, device_id: str | None = None,
                   project_id: str | None = None) -> list[Port]:
        with self._lock:
            self._check_open()
            found = [p for p in self._ports.values()
                     if (network_id is None or p.network_id == network_id)
                     and (device_id is None or p.device_id == device_id)
                     and (project_id is None or p.project_id == project_id)]
        return sorted(found, key=lambda p: (p.device_index, p.created_at, str(p.id)))

    async def set_port_status(self, port_ids: Sequence[UUID], status: str) -> None:
        await _turn()
        value = PortStatus(status)
        with self._writing():
            self._check_open()
            for i in port_ids:
                if i in self._ports:
                    self._ports[i] = self._ports[i].model_copy(update={"status": value})

    async def delete_port(self, port_id: UUID) -> Port:
        await _turn()
        with self._writing():
            self._check_open()
            current = self._ports.get(port_id)
            if current is None:
                raise PortNotFound(f"Port {port_id} could not be found.")
            if current.bound:
                raise PortInUse(f"Port {port_id} is in use by server {current.device_id}: delete "
                                "the server first.")
            del self._ports[port_id]
            return current

    async def release_ports(self, device_id: str) -> list[Port]:
        await _turn()
        if not device_id:
            return []
        with self._writing():
            self._check_open()
            return self._release(device_id)

    # -- keypairs -------------------------------------------------------------------------

    async def add_keypair(self, keypair: Keypair) -> Keypair:
        await _turn()
        created = _utc(keypair.created_at)
        with self._lock:
            self._check_open()
            key = (keypair.user_id, keypair.name)
            if key in self._keypairs:
                raise KeypairExists(exists_message(keypair.name))
            self._keypair_seq += 1
            stored = keypair.model_copy(update={"id": self._keypair_seq, "created_at": created})
            self._keypairs[key] = stored
            return stored

    def get_keypair(self, user_id: str, name: str) -> Keypair | None:
        with self._lock:
            self._check_open()
            return self._keypairs.get((user_id, name))

    def list_keypairs(self, user_id: str) -> list[Keypair]:
        with self._lock:
            self._check_open()
            found = [k for (user, _), k in self._keypairs.items() if user == user_id]
        return sorted(found, key=lambda k: (k.name, k.id))

    async def delete_keypair(self, user_id: str, name: str) -> Keypair:
        await _turn()
        with self._lock:
            self._check_open()
            current = self._keypairs.pop((user_id, name), None)
        if current is None:
            raise KeypairNotFound(not_found_message(user_id, name))
        return current

    # -- server groups: members derived from the servers' hints, as SqliteStore does ------

    def _with_members(self, group: ServerGroup) -> ServerGroup:
        key = str(group.id)
        members = sorted((s for s in self._servers.values()
                          if s.scheduler_hints.get("group") == key and s.vm_state is not VmState.DELETED),
                         key=lambda s: (s.created_at, str(s.id)))
        return group.model_copy(update={"members": tuple(s.id for s in members)})

    async def add_server_group(self, group: ServerGroup) -> ServerGroup:
        await _turn()
        stored = group.model_copy(update={"created_at": _utc(group.created_at), "members": ()})
        with self._writing():
            self._check_open()
            if group.id in self._server_groups:
                raise StoreError("add server group: UNIQUE constraint failed: server_groups.id")
            self._server_groups[group.id] = stored
            return self._with_members(stored)

    def get_server_group(self, group_id: UUID) -> ServerGroup | None:
        with self._lock:
            self._check_open()
            found = self._server_groups.get(group_id)
            return self._with_members(found) if found is not None else None

    def list_server_groups(self, project_id: str | None = None) -> list[ServerGroup]:
        with self._lock:
            self._check_open()
            found = [self._with_members(g) for g in self._server_groups.values()
                     if project_id is None or g.project_id == project_id]
        return sorted(found, key=lambda g: (g.created_at, str(g.id)))

    async def delete_server_group(self, group_id: UUID) -> ServerGroup:
        await _turn()
        with self._writing():
            self._check_open()
            current = self._server_groups.pop(group_id, None)
            if current is None:
                raise ServerGroupNotFound(group_not_found_message(group_id))
            return self._with_members(current)
