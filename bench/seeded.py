"""A daemon whose store already holds N servers when it starts (figures 5 and 6), and
what those figures read of it: when it said it was ready, its start-up reconcile time,
its resident memory.

The servers are written with the agent's own SqliteStore, as ACTIVE and running, each
with a finished create job (so nothing resumes). Their domains do not exist unless the
figure provides them (figure 6's test-driver node), so the start-up reconcile marks them
UNKNOWN with a "domain vanished" fault: harmless for a read-latency or memory figure,
and it makes every listed server carry a fault (slightly larger answers)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.adapters.sqlite_store import SqliteStore
from agent.model.domain import PowerState
from agent.model.job import Job, JobKind, JobStatus
from agent.model.server import Server
from agent.model.states import VmState
from agent.protocols import NewServer
from bench.daemon import BenchDaemon
from bench.scratch import Scratch
from bench.timing import poll

PROJECT = "bench"  # the bench token's project (bench/daemon.py)
READY_TIMEOUT_S = 120


def seed_servers(db: Path, count: int, image_id: uuid.UUID, flavor: str = "1", *,
                 project: str = PROJECT, hosts: tuple[str, ...] = ()) -> list[uuid.UUID]:
    """`count` ACTIVE servers of `project` in the store at `db`; their ids. With `hosts`
    (a controller's store), server i is placed on hosts[i % len(hosts)]."""
    store = SqliteStore(db)
    ids, batch = [], []
    try:
        for i in range(count):
            now = datetime.now(UTC)
            sid = uuid.uuid4()
            server = Server(id=sid, project_id=project, user_id="bench", name=f"seeded-{i:04d}",
                            host=hosts[i % len(hosts)] if hosts else "",
                            image_id=image_id, flavor_id=flavor, vm_state=VmState.ACTIVE,
                            task_state=None, power_state=PowerState.RUNNING, progress=100,
                            metadata={"role": "bench", "index": str(i)}, created_at=now,
                            updated_at=now, launched_at=now)
            job = Job(id=uuid.uuid4(), server_id=sid, kind=JobKind.CREATE,
                      status=JobStatus.SUCCEEDED, step="done", created_at=now, updated_at=now)
            batch.append(NewServer(server, job))
            ids.append(sid)
        asyncio.run(store.create_servers(batch))
    finally:
        store.close()
    return ids


def seeded_daemon(scratch: Scratch, name: str, servers: int, image_id: uuid.UUID
                  ) -> tuple[BenchDaemon, list[uuid.UUID]]:
    """A BenchDaemon (not started) with `servers` servers in its store."""
    daemon = BenchDaemon(scratch, name)
    ids = seed_servers(daemon.state_dir / "agent.db", servers, image_id) if servers else []
    return daemon, ids


def set_top_level(daemon: BenchDaemon, key: str, value: str | float) -> None:
    """Set a top-level key of a daemon's config (the daemon not started)."""
    # Top-level keys go before the [[tokens]] tables, or they would belong to one.
    daemon.config.write_text(f"{key} = {json.dumps(value)}\n" + daemon.config.read_text())


def use_libvirt(daemon: BenchDaemon, uri: str) -> None:
    """Point a daemon (not started) at another libvirt URI."""
    set_top_level(daemon, "libvirt_uri", uri)


def log_events(daemon: BenchDaemon, event: str) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log.read_text(errors="replace").splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            out.append(entry)
    return out


def wait_ready(daemon: BenchDaemon, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
    """Block until the daemon logged `agent.ready` (start-up reconcile over); that entry."""
    def ready() -> dict[str, Any] | None:
        found = log_events(daemon, "agent.ready")
        return found[-1] if found else None

    return poll(ready, timeout, interval=0.05, what="agent.ready")


def wait_logged(daemon: BenchDaemon, event: str, timeout: float) -> dict[str, Any]:
    """Block until the daemon logged `event`; its first entry."""
    return poll(lambda: (log_events(daemon, event) or [None])[0], timeout, interval=0.2, what=event)


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process (VmRSS, or RssAnon: its own heap, not mapped files), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def settle_rss(pid: int, seconds: float = 2.0) -> float:
    """RSS after a short pause (lets a burst of work end)."""
    time.sleep(seconds)
    return rss_mib(pid)
