"""libvirt's event loop on asyncio (libvirtaio), made safe to use from worker threads.

libvirtaio registers libvirt's file-descriptor watches and timers with the asyncio loop,
so lifecycle events arrive in the loop without a thread of their own. But libvirt calls
the event implementation from whichever thread makes a libvirt call, and the agent makes
its (sometimes slow) libvirt calls from worker threads to keep the API responsive, while
asyncio's loop may only be touched from its own thread. So every add/update/remove is
queued onto the loop with call_soon_threadsafe, in order. Ids are handed out at once, as
libvirt needs them; the changes take effect at the loop's next turn — the same deferred
semantics as libvirt's own poll-based default loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import libvirtaio


class ThreadSafeAsyncIOImpl(libvirtaio.virEventAsyncIOImpl):
    def _on_loop(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        callback = libvirtaio.FDCallback(self, cb, opaque, descriptor=None, event=event)

        def add() -> None:
            callback.descriptor = self.descriptors[fd]
            self.callbacks[callback.iden] = callback
            callback.descriptor.add_handle(callback)
            self._pending_inc()

        self._on_loop(add)
        return callback.iden

    def _update_handle(self, watch: int, event: int) -> None:
        self._on_loop(lambda: super(ThreadSafeAsyncIOImpl, self)._update_handle(watch, event)
                      if watch in self.callbacks else None)

    def _remove_handle(self, watch: int) -> int:
        self._on_loop(lambda: super(ThreadSafeAsyncIOImpl, self)._remove_handle(watch))
        return 0

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        callback = libvirtaio.TimeoutCallback(self, cb, opaque)

        def add() -> None:
            self.callbacks[callback.iden] = callback
            callback.update(timeout=timeout)
            self._pending_inc()

        self._on_loop(add)
        return callback.iden

    def _update_timeout(self, timer: int, timeout: int) -> None:
        self._on_loop(lambda: super(ThreadSafeAsyncIOImpl, self)._update_timeout(timer, timeout)
                      if timer in self.callbacks else None)

    def _remove_timeout(self, timer: int) -> int:
        self._on_loop(lambda: super(ThreadSafeAsyncIOImpl, self)._remove_timeout(timer))
        return 0


_installed: ThreadSafeAsyncIOImpl | None = None


def install_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Register libvirt's event implementation on `loop`. Once per process, before the
    first libvirt connection is opened (libvirt binds connections to it at open)."""
    global _installed
    if _installed is None:
        _installed = ThreadSafeAsyncIOImpl(loop=loop).register()
