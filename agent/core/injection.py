"""Batches injections so that servers built at the same time share one libguestfs
appliance launch (the launch is most of the cost: ~11 s under TCG, 1-3 s on KVM).

A request waits for company only while some other build is on its way to an injection
(making its disk: `on_the_way`), and at most a short window; then it goes to the injector
with every other request waiting. A lone build does not wait at all. Requests that arrive
while a batch runs form the next batch.

The servers of one multi-create are a group of known size: once one of them arrives, the
batch waits (up to `group_wait_s`) until all of them have, however long their disks took
to make, and keeps them in one batch, so one create request costs one appliance launch.
A disk a guest has written (an offline password change) is never batched with others:
whatever its tenant put there is parsed by an appliance that holds no one else's disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import structlog

from agent.core.metrics import Metrics
from agent.errors import InjectionError
from agent.model.injection import InjectionRequest, InjectionResult
from agent.protocols import DiskInjector

log = structlog.get_logger("agent.injection")

# How long an incomplete group's arrivals are remembered after its deadline, so that a late
# member does not start waiting for the others all over again.
_FORGET_S = 600.0


@dataclass(frozen=True)
class BatchGroup:
    """Requests that belong in one batch: `size` of them share `key` (a reservation id)."""

    key: str
    size: int


@dataclass
class _Waiting:
    request: InjectionRequest
    future: asyncio.Future[InjectionResult]
    group: BatchGroup | None


@dataclass
class _Arrivals:
    count: int
    deadline: float


class InjectionBatcher:
    def __init__(self, injector: DiskInjector, window_s: float = 0.5, max_batch: int = 8,
                 metrics: Metrics | None = None, group_wait_s: float = 20.0) -> None:
        self.injector = injector
        self.metrics = metrics or Metrics()
        self.window_s = window_s
        self.max_batch = max_batch
        self.group_wait_s = group_wait_s
        self.batches: list[int] = []  # sizes of the batches run, for metrics and tests
        self._pending: list[_Waiting] = []
        self._groups: dict[str, _Arrivals] = {}  # groups not complete yet
        self._arrived = asyncio.Event()  # a request came, or a build on its way left
        self._coming = 0  # builds on their way to inject() (on_the_way)
        self._worker: asyncio.Task[None] | None = None

    async def inject(self, request: InjectionRequest, group: BatchGroup | None = None) -> InjectionResult:
        """Inject into one disk; raises InjectionError if that disk could not be done.
        `group`: the request is one of that many to be injected together."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InjectionResult] = loop.create_future()
        if group is not None and group.size > 1:
            arrivals = self._groups.setdefault(
                group.key, _Arrivals(0, loop.time() + self.group_wait_s))
            arrivals.count += 1
            if arrivals.count >= group.size:
                del self._groups[group.key]
        self._pending.append(_Waiting(request, future, group))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    @contextlib.contextmanager
    def on_the_way(self) -> Iterator[None]:
        """Around what a build does before its inject() (making its disk): requests
        pending wait (up to the window) until it arrives, to share an appliance with it.
        Leave it right before inject(), with no await between."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            self._arrived.set()

    async def _wait_for_company(self) -> None:
        """Until no build is on its way, or the window has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while self._coming and loop.time() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())

    async def _wait_for_groups(self) -> None:
        """Until every group with a request pending is complete, or past its deadline (a
        member failed before its injection, or a resumed build is done already)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for key in [k for k, a in self._groups.items() if now > a.deadline + _FORGET_S]:
                del self._groups[key]  # never completed: its count is of no use any more
            keys = {w.group.key for w in self._pending if w.group is not None}
            deadlines = [self._groups[k].deadline for k in keys if k in self._groups]
            if not deadlines or now >= min(deadlines):
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(deadlines) - loop.time())

    def _take_batch(self) -> list[_Waiting]:
        """The oldest live request's batch: it alone if a guest wrote its disk (whatever
        its tenant put there is parsed by an appliance that holds no one else's disk),
        else up to max_batch requests whose disks no guest wrote, oldest first, a group's
        members kept together (a group larger than max_batch fills batches of its own).
        The requests left keep their turn."""
        self._pending = [w for w in self._pending if not w.future.cancelled()]
        if not self._pending:
            return []
        batch: list[_Waiting] = []
        if self._pending[0].request.guest_written:
            batch = self._pending[:1]
        else:
            units: dict[object, list[_Waiting]] = {}
            for w in self._pending:
                if not w.request.guest_written:
                    units.setdefault(w.group.key if w.group is not None else id(w), []).append(w)
            for unit in units.values():
                room = self.max_batch - len(batch)
                if len(unit) <= room or not batch:
                    batch += unit[:room]
        taken = {id(w) for w in batch}
        self._pending = [w for w in self._pending if id(w) not in taken]
        return batch

    async def _work(self) -> None:
        while self._pending:
            await self._wait_for_company()
            await self._wait_for_groups()
            waiting = self._take_batch()
            batch = [(w.request, w.future) for w in waiting]
            if not batch:
                continue
            self.batches.append(len(batch))
            log.info("injection.batch", size=len(batch))  # one appliance launch (or warm use)
            try:
                with self.metrics.injection_batch(len(batch)):
                    results = await asyncio.to_thread(self.injector.inject, [r for r, _ in batch])
            except Exception as e:  # the whole batch failed: each waiter gets the error
                results = [InjectionError(f"injection failed: {type(e).__name__}")] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, InjectionError):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
