"""Batches injections so that servers built at the same time share one libguestfs
appliance launch (the launch is most of the cost: ~11 s under TCG, 1-3 s on KVM).

A request waits a short window for company, then goes to the injector with every other
request waiting; requests that arrive while a batch runs form the next batch.
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
            batch = [(r, f) for r, f in self._pending[: self.max_batch] if not f.cancelled()]
            del self._pending[: self.max_batch]
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

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
