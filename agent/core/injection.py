"""Batches injections so that servers built at the same time share one libguestfs
appliance launch (the launch is most of the cost: ~11 s under TCG, 1-3 s on KVM).

A request waits a short window for company, then goes to the injector with every other
request waiting; requests that arrive while a batch runs form the next batch. A disk a
guest has written (an offline password change) is never batched with others: whatever
its tenant put there is parsed by an appliance that holds no one else's disk.
"""

from __future__ import annotations

import asyncio
import contextlib

from agent.core.metrics import Metrics
from agent.errors import InjectionError
from agent.model.injection import InjectionRequest, InjectionResult
from agent.ports import DiskInjector


class InjectionBatcher:
    def __init__(self, injector: DiskInjector, window_s: float = 0.5, max_batch: int = 8,
                 metrics: Metrics | None = None) -> None:
        self.injector = injector
        self.metrics = metrics or Metrics()
        self.window_s = window_s
        self.max_batch = max_batch
        self.batches: list[int] = []  # sizes of the batches run, for metrics and tests
        self._pending: list[tuple[InjectionRequest, asyncio.Future[InjectionResult]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def inject(self, request: InjectionRequest) -> InjectionResult:
        """Inject into one disk; raises InjectionError if that disk could not be done."""
        future: asyncio.Future[InjectionResult] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def _work(self) -> None:
        while self._pending:
            await asyncio.sleep(self.window_s)
            batch = self._next_batch()
            if not batch:
                continue
            self.batches.append(len(batch))
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

    def _next_batch(self) -> list[tuple[InjectionRequest, asyncio.Future[InjectionResult]]]:
        """The oldest live request's batch: it alone if a guest wrote its disk, else up to
        max_batch requests whose disks no guest wrote (the others keep their turn)."""
        live = [(r, f) for r, f in self._pending if not f.cancelled()]
        if not live:
            self._pending.clear()
            return []
        if live[0][0].guest_written:
            batch = live[:1]
        else:
            batch = [(r, f) for r, f in live if not r.guest_written][: self.max_batch]
        taken = {id(f) for _, f in batch}
        self._pending = [(r, f) for r, f in live if id(f) not in taken]
        return batch

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
