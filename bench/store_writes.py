"""The store's read path while builds write: `python bench/store_writes.py [--servers N]
[--builds B] [--reads R]`.

A smaller, in-process variant of "GET /servers/detail p99 while 8 servers build": no HTTP,
no guests. The store holds N servers; B simulated builds each create a server and then make
the writes a real build makes (17: job and server checkpoints, a few ms apart), all on one
event loop, as the daemon does; meanwhile a reader on the same loop lists every server
(the store read of GET /servers/detail) every 40 ms. Printed: the reader's latency p50/p99,
counted from when each read was due (so time the loop spent blocked counts, as a client
would feel it), and the commits (fsyncs) per build.

Self-contained (imports only `agent`), so it runs against any checkout: with the code
before issue 15 item 2 (writes synchronous on the loop) and after (the writer thread):
`PYTHONPATH=/path/to/checkout python bench/store_writes.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.adapters.sqlite_store import SqliteStore
from agent.model.job import Job, JobKind
from agent.model.server import Server
from agent.model.states import TaskState, VmState

WRITES_PER_BUILD = 17  # a build's writes after its create, as measured in the README (18 in all)
STEP_PAUSE_S = 0.003  # between a build's writes (the real work between checkpoints, shortened)
READ_EVERY_S = 0.04


def _server(i: int) -> tuple[Server, Job]:
    now = datetime.now(UTC)
    sid = uuid.uuid4()
    return (Server(id=sid, project_id="bench", user_id="bench", name=f"s-{i:04d}",
                   image_id=uuid.uuid4(), flavor_id="1", created_at=now, updated_at=now),
            Job(id=uuid.uuid4(), server_id=sid, kind=JobKind.CREATE, created_at=now,
                updated_at=now))


async def _write(method: Any, *args: Any, **kw: Any) -> Any:
    """Await the store's write (after), or call it on the loop as the daemon did (before)."""
    result = method(*args, **kw)
    return await result if inspect.isawaitable(result) else result


async def _build(store: SqliteStore, i: int) -> None:
    server, job = _server(i)
    await _write(store.create_server, server, job)
    for step in range(WRITES_PER_BUILD):
        await asyncio.sleep(STEP_PAUSE_S)
        if step % 2:
            await _write(store.update_job, job.id, {"step": f"step-{step}"})
        else:
            await _write(store.update_server, server.id, {"progress": step * 5,
                         "vm_state": VmState.BUILDING, "task_state": TaskState.SPAWNING},
                         cause=f"step-{step}")


async def _reader(store: SqliteStore, reads: int, latencies: list[float]) -> None:
    start = time.perf_counter()
    for i in range(reads):
        due = start + i * READ_EVERY_S
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        store.list_servers()
        latencies.append(time.perf_counter() - due)


async def _run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = SqliteStore(Path(tmp) / "agent.db")
        seed = [_server(i) for i in range(args.servers)]
        if inspect.iscoroutinefunction(store.create_servers):
            from agent.protocols import NewServer
            await store.create_servers([NewServer(s, j) for s, j in seed])
        else:
            from agent.protocols import NewServer
            store.create_servers([NewServer(s, j) for s, j in seed])
        store.list_servers()  # the reader's cache warm, as a daemon that has served a list
        quiet: list[float] = []
        await _reader(store, args.reads // 4, quiet)
        before = store.write_transactions
        latencies: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(_reader(store, args.reads, latencies),
                             *(_build(store, 10_000 + b) for b in range(args.builds)))
        took = time.perf_counter() - started
        commits = store.write_transactions - before
        store.close()
    ms = sorted(x * 1000 for x in latencies)
    q = sorted(x * 1000 for x in quiet)
    p99 = ms[int(len(ms) * 0.99) - 1]
    print(f"servers={args.servers} builds={args.builds} reads={len(ms)} run={took:.2f}s")
    print(f"list_servers latency from due time, no builds: p50 {statistics.median(q):.1f} ms,"
          f" p99 {q[int(len(q) * 0.99) - 1]:.1f} ms")
    print(f"list_servers latency from due time, during builds: p50 {statistics.median(ms):.1f} ms,"
          f" p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")
    print(f"commits (fsyncs) during builds: {commits}, per build {commits / args.builds:.2f}"
          f" ({WRITES_PER_BUILD + 1} writes per build)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--builds", type=int, default=8)
    parser.add_argument("--reads", type=int, default=150)
    parser.add_argument("--dir", default=".", help="where the database goes: on the disk a state"
                        " dir would be on (a tmpfs makes an fsync free)")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
