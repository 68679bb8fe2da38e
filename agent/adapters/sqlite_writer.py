"""One writer thread for the SQLite store: group commit off the event loop.

Every write request goes through a bounded queue to one thread that owns the write
connection. The thread takes everything queued, runs each request in its own SAVEPOINT
inside one `BEGIN IMMEDIATE` transaction and COMMITs once: one fsync of the WAL for the
whole group (with `synchronous=FULL` the fsync, not the SQL, is what a write costs). A
request that raises is rolled back to its savepoint alone and its caller gets the error;
the others commit. Every caller gets its answer only after the COMMIT returned, so an
answer always means "durable" (the API answers 202 only after a job is committed).

Readers use their own connection (WAL), so a read never waits on a commit's fsync.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.errors import StoreError

log = structlog.get_logger("agent.store.writer")

QUEUE_DEPTH = 1024  # pending write requests; past it a submitter waits (backpressure)
MAX_GROUP = 256  # requests per transaction: a bound on one commit's latency
_PUT_TIMEOUT_S = 30.0


@dataclass
class _Request:
    what: str
    body: Callable[[sqlite3.Connection], Any]
    future: Future[Any] = field(default_factory=Future)
    flags: set[str] = field(default_factory=set)
    result: Any = None


_STOP = object()


def _closed(what: str) -> StoreError:
    return StoreError(f"state database: {what} failed: the store is closed")


def as_store_error(what: str, e: sqlite3.Error) -> StoreError:
    """SQLite's messages name tables and columns, never bound values (payloads)."""
    code = getattr(e, "sqlite_errorname", "")
    return StoreError(f"state database: {what} failed: {e}" + (f" ({code})" if code else ""))


class GroupWriter:
    """The writer thread. `submit(what, body)` queues `body(conn)` and returns a Future
    resolved after the commit that made its work durable (or with the error it raised).
    `on_commit(conn, flags)` runs on the writer thread after each COMMIT with the union of
    the flags (`note`) that the committed requests set: the store pokes its event listener
    and truncates the WAL from there, before any caller gets its answer."""

    def __init__(self, conn: sqlite3.Connection, on_commit: Callable[[sqlite3.Connection, set[str]], None],
                 *, name: str = "sqlite-writer") -> None:
        self._conn = conn
        self._on_commit = on_commit
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._lock = threading.Lock()  # orders submit() against stopping
        self._closed = False
        self._current: _Request | None = None
        self._group: list[_Request] = []  # the group being written: failed if the thread dies
        self.commits = 0  # committed transactions (groups): each one fsyncs the WAL
        self.requests = 0  # committed requests
        # A test hook: called on the writer thread before each group begins.
        self.before_group: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- callers' side ---------------------------------------------------------------------

    def submit(self, what: str, body: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        request = _Request(what, body)
        with self._lock:
            if self._closed or not self._thread.is_alive():
                raise _closed(what)
            try:
                self._queue.put(request, timeout=_PUT_TIMEOUT_S)
            except queue.Full:
                raise StoreError(f"state database: {what} failed: too many writes queued") from None
        return request.future

    def on_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def note(self, flag: str) -> None:
        """Mark the request now running (on the writer thread) with `flag`; it reaches
        on_commit only if the request commits."""
        if self._current is not None:
            self._current.flags.add(flag)

    def close(self) -> None:
        """Run everything already queued, then stop the thread (it does not close the
        connection: the store does, once the thread is gone)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread.is_alive():
                self._queue.put(_STOP)  # the thread drains the queue, so this never waits long
        self._thread.join()

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                group, stop = self._take()
                if group:
                    self._write_group(group)
                if stop:
                    return
        except BaseException as e:  # a bug, or the interpreter going down: fail, never hang
            log.error("store.writer_died", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            with self._lock:
                self._closed = True
            died = StoreError("state database: the store's writer stopped")
            for r in self._group:
                _settle(r.future, error=died)
            self._fail_queued()

    def _take(self) -> tuple[list[_Request], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        group = [first]
        while len(group) < MAX_GROUP:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return group, True
            group.append(item)
        return group, False

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _settle(item.future, error=_closed(item.what))

    def _write_group(self, group: list[_Request]) -> None:
        self._group = group
        if self.before_group is not None:
            self.before_group()
        pending = group
        while pending:  # more than one round only when SQLite dropped a transaction
            pending = self._one_transaction(pending)
        self._group = []

    def _one_transaction(self, group: list[_Request]) -> list[_Request]:
        """Run `group` in one transaction; what is left to run if SQLite rolled the whole
        transaction back under a request (SQLITE_FULL, say): its earlier requests failed."""
        conn = self._conn
        done: list[_Request] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            for r in group:
                _settle(r.future, error=as_store_error(r.what, e))
            return []
        for i, request in enumerate(group):
            if not request.future.set_running_or_notify_cancel():
                continue  # its caller was cancelled before it ran: it is not done at all
            if self._run_one(conn, request):
                done.append(request)
            if not conn.in_transaction:  # SQLite rolled it all back: the group's work is gone
                lost = StoreError(f"state database: {request.what} failed: transaction rolled back")
                for r in done:
                    _settle(r.future, error=lost)
                return group[i + 1:]
        if not done:  # every request failed: nothing to commit, no fsync
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return []
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for r in done:
                _settle(r.future, error=as_store_error(r.what, e))
            return []
        self.commits += 1
        self.requests += len(done)
        flags = set().union(*(r.flags for r in done)) if done else set()
        try:
            self._on_commit(conn, flags)
        except Exception as e:  # a listener's failure must not fail durable writes
            log.error("store.on_commit_failed", error=f"{type(e).__name__}: {e}")
        for r in done:
            _settle(r.future, result=r.result)
        return []

    def _run_one(self, conn: sqlite3.Connection, request: _Request) -> bool:
        """The request in its own savepoint; True if it succeeded (its future is settled
        after the commit), else its future has its error and its work is rolled back."""
        self._current = request
        try:
            conn.execute("SAVEPOINT request")
            request.result = request.body(conn)
            conn.execute("RELEASE request")
            return True
        except BaseException as e:  # the caller gets whatever it raised
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
            error = as_store_error(request.what, e) if isinstance(e, sqlite3.Error) else e
            _settle(request.future, error=error)
            if not isinstance(e, Exception):
                raise
            return False
        finally:
            self._current = None


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
