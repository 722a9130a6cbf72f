"""``Pool``: the driver for blocking runtimes (threading, gevent, eventlet).

A thin layer over :class:`connpool._core.Core`: it reads the clock, takes the
scheduler's lock around core calls (a real lock on threading, a no-op on green
runtimes, where core calls never switch), waits on a scheduler event when the
core says to wait, and runs connects, resets and closes in background
threads or greenlets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._core import BUSY, FAILED, SERVED, Record
from ._pool import UNSET, BasePool, default_close
from .backends import SyncScheduler, detect_sync_backend, get_backend

__all__ = ["Pool"]

logger = logging.getLogger("connpool")

C = TypeVar("C")


class Pool(BasePool[C], Generic[C]):
    """A connection pool for threading, gevent or eventlet code.

    ``connect`` is a zero-argument callable returning a new connection, or a
    connector object with a ``connect()`` method (and optional ``close``,
    ``check``, ``reset`` methods used as default hooks).  See the API
    reference for every parameter; invalid values raise ``TypeError`` or
    ``ValueError`` naming the parameter.

    >>> with Pool(make_conn, max_size=5) as pool:          # doctest: +SKIP
    ...     with pool.connection() as conn:
    ...         conn.sendall(b"PING\\n")
    """

    _family = "sync"
    _facade = "Pool"
    _other_facade = "AsyncPool"

    def __init__(
        self,
        connect: Callable[[], C] | Any,
        *,
        backend: str | SyncScheduler = "auto",
        min_size: int = 0,
        max_size: int = 10,
        burst_limit: int | None = None,
        timeout: float | None = 30.0,
        max_waiting: int = 0,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        max_uses: int | None = None,
        check: Callable[[C], bool] | None = None,
        check_after: float = 0.5,
        reset: Callable[[C], object] | None = None,
        close: Callable[[C], object] | None = None,
        ping: Callable[[C], object] | None = None,
        keepalive_interval: float | None = None,
        leak_timeout: float | None = None,
        discard_on: type[BaseException] | tuple[type[BaseException], ...] = (OSError,),
        lifo: bool = True,
        name: str | None = None,
        connect_timeout: float | None = 30.0,
        max_connecting: int = 4,
        num_workers: int = 2,
        reconnect_failed: Callable[[Pool[C]], object] | None = None,
        reconnect_timeout: float = 60.0,
    ) -> None:
        self._sched = _resolve_sync_backend(backend)
        super().__init__(
            connect,
            min_size=min_size,
            max_size=max_size,
            burst_limit=burst_limit,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            max_uses=max_uses,
            check=check,
            check_after=check_after,
            reset=reset,
            close=close,
            ping=ping,
            keepalive_interval=keepalive_interval,
            leak_timeout=leak_timeout,
            discard_on=discard_on,
            lifo=lifo,
            name=name,
            connect_timeout=connect_timeout,
            max_connecting=max_connecting,
            num_workers=num_workers,
            reconnect_failed=reconnect_failed,
            reconnect_timeout=reconnect_timeout,
        )
        self._now = self._sched.monotonic
        bind = getattr(self._hooks.connector, "bind_backend", None)
        if bind is not None:
            bind(self._sched.name)  # a connector left on "auto" runs on the pool's backend
        self._setup_waits(self._sched)
        self._init_runtime_state()

    def _init_runtime_state(self) -> None:
        """Locks, events and worker slots: made at construction, and anew in a forked child."""
        self._lock = self._sched.lock()
        self._jobs: Any = None
        self._workers: list[Any] = []
        self._stopping = self._sched.event()  # set by close(): wakes backoff sleepers
        self._changed = self._sched.event()  # set when size grows or the last busy one returns
        self._wakeup = self._sched.event()  # wakes the housekeeper

    def _reset_after_fork(self) -> None:
        super()._reset_after_fork()
        self._init_runtime_state()

    @property
    def backend(self) -> str:
        """The name of the backend the pool runs on."""
        return self._sched.name

    # ----------------------------------------------------------- lifecycle

    def open(self, wait: bool = False, timeout: float | None = None) -> None:
        """Start the pool: background workers, and ``min_size`` connections in the background.

        With ``wait=True``, block until ``min_size`` connections are open
        (``PoolTimeout`` after ``timeout`` seconds, default: the pool's
        ``timeout``).  Opening an open pool does nothing; a closed pool cannot
        be reopened (``PoolClosed``).
        """
        with self._lock:
            self._check_open()
            starting = not self._opened
            if starting:
                self._opened = True
                self._jobs = self._sched.queue()
        if starting:
            self._workers = [self._sched.spawn(self._worker) for _ in range(self._num_workers)]
            if self._housekeeping or self._managed:
                self._workers.append(self._sched.spawn(self._housekeeper))
            self._after_change()
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float | None = UNSET) -> None:
        """Block until ``min_size`` connections are open, or raise ``PoolTimeout``."""
        if not self._opened:
            self.open()
        core = self._core
        timeout, deadline = self._deadline(timeout, self._now())
        while True:
            with self._lock:
                self._check_open()
                if core.size >= core.min_size:
                    return
                self._changed.clear()
            remaining = deadline - self._now()
            if remaining <= 0:
                with self._lock:
                    raise core.timeout_error(timeout or 0.0)
            self._changed.wait(None if remaining == math.inf else remaining)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool.

        New ``acquire`` calls raise ``PoolClosed``; waiting callers are woken
        with ``PoolClosed``; idle connections are closed; checked-out ones are
        closed as they come back, or after ``timeout`` seconds anyway; then
        background work stops.  Idempotent.
        """
        core = self._core
        with self._lock:
            if core.closed:
                return
            failed = core.close()
        for ticket in failed:
            ticket.waker.set()
        self._stopping.set()
        self._wakeup.set()
        self._after_change()
        if not self._opened:
            self._finished = True
            self._close_inline(core.to_close)
            return
        deadline = self._now() + timeout
        while True:
            with self._lock:
                if not core.busy:
                    break
                self._changed.clear()
            remaining = deadline - self._now()
            if remaining <= 0:
                with self._lock:
                    core.force_close()
                self._after_change()
                break
            self._changed.wait(remaining)
        for _ in range(self._num_workers):
            self._jobs.put(None)
        for worker in self._workers:
            worker.join(max(0.0, deadline - self._now()) + 1.0)
        leftover: list[Record] = []
        with self._lock:
            self._finished = True
            leftover, core.to_close = core.to_close, []
            while self._jobs.qsize():
                job = self._jobs.get(0)
                if job is not None:
                    leftover.append(job[1])
        self._close_inline(leftover)

    def __enter__(self) -> Pool[C]:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ checkout

    def acquire(self, timeout: float | None = UNSET) -> C:
        """Return a connection, waiting up to ``timeout`` seconds (default: the pool's).

        ``timeout=0`` never waits; ``None`` waits forever.  Raises
        ``PoolTimeout`` (saying whether all connections were busy or the pool
        cannot connect), ``TooManyWaiters`` or ``PoolClosed``.  An interrupted
        wait (``gevent.Timeout``, ``KeyboardInterrupt``...) loses nothing and
        re-raises.
        """
        if not self._opened:
            self.open()
        core = self._core
        lock = self._lock
        deadline = -1.0  # set when the first wait starts
        rec: Record | None
        while True:
            lock.acquire()
            try:
                started = self._now()
                if core.plain_checkout and core.idle:
                    # Core.checkout for a pool without time rules on idle records, inlined
                    # (one frame less on every acquire); the fast-path equivalence test holds
                    # it to Core.checkout.
                    rec = core.take_idle()
                    core.busy[rec.key] = rec
                    rec.state = BUSY
                    rec.uses += 1
                    rec.checked_out = started
                else:
                    # (plain_checkout and no idle record: checkout() would find nothing)
                    rec = None if core.plain_checkout else core.checkout(started)
                    if rec is None:
                        if deadline < 0:
                            timeout, deadline = self._deadline(timeout, started)
                        if started >= deadline:
                            core.timeouts += 1
                            raise core.timeout_error(timeout or 0.0)
                        ticket = core.enqueue(started, self._new_waker(), deadline, self._managed)
            finally:
                lock.release()
            if rec is None:
                rec = self._wait(ticket)
            elif not (core.attention or self._watch_checkout):
                return rec.conn  # type: ignore[no-any-return]  # (the fast path: nothing else to do)
            else:
                if core.leak_timeout is not None:
                    self._note_holder(rec)
                if core.attention:
                    self._after_change()
            check = self._hooks.check
            if check is None or self._now() - rec.returned < self._check_after:
                return rec.conn  # type: ignore[no-any-return]
            if self._run_check(check, rec):
                return rec.conn  # type: ignore[no-any-return]

    def _wait(self, ticket: Any) -> Record:
        core = self._core
        if core.attention:
            self._after_change()  # starts the connects this waiter may need, wakes the housekeeper
        try:
            if ticket.managed or ticket.deadline == math.inf:
                ticket.waker.wait(None)
            else:
                ticket.waker.wait(max(0.0, ticket.deadline - self._now()))
        except BaseException:
            with self._lock:
                passed_on = core.abandon(ticket, self._now())
            self._wake(passed_on)
            if core.attention:
                self._after_change()
            raise
        if ticket.state != SERVED:  # (a SERVED ticket stays SERVED: only this caller moves it on)
            with self._lock:  # a timeout racing a hand-over, or the pool closing: decide under the lock
                if ticket.state == FAILED:
                    raise ticket.error
                if ticket.state != SERVED:
                    raise core.timed_out(ticket, self._now())
        rec: Record = ticket.record
        if core.leak_timeout is not None:
            self._note_holder(rec)
        return rec

    def _run_check(self, check: Callable[[Any], Any], rec: Record) -> bool:
        """Run the checkout check; a failed connection is discarded (False)."""
        try:
            ok = check(rec.conn)
        except Exception:
            logger.info("%s: check failed on %r; discarding it", self._describe(), rec.conn, exc_info=True)
            ok = False
        except BaseException:
            self._discard(rec)
            raise
        if ok is None or ok:
            return True
        self._discard(rec)
        return False

    def _discard(self, rec: Record) -> None:
        with self._lock:
            self._core.discard_record(rec)
        self._after_change()

    def connection(self, timeout: float | None = UNSET) -> _Checkout[C]:
        """A context manager: acquire a connection, give it back when the block ends.

        An exception in ``discard_on`` (default ``OSError``) or one that is
        not an ``Exception`` (``gevent.Timeout``, ``KeyboardInterrupt``...)
        discards the connection; other exceptions return it.
        """
        return _Checkout(self, timeout)

    # ---------------------------------------------------------- background

    def _submit(self, job: tuple[str, Record]) -> None:
        with self._lock:
            if not self._finished and self._jobs is not None:
                self._jobs.put(job)
                return
        self._run_job(job)

    def _spawn_connects(self, n: int) -> None:
        for _ in range(n):
            self._sched.spawn(self._connect_worker)

    def _worker(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            self._run_job(job)

    def _run_job(self, job: tuple[str, Record]) -> None:
        kind, rec = job
        if kind == "reset":
            discard = False
            try:
                self._hooks.reset(rec.conn)  # type: ignore[misc]
            except BaseException:
                logger.warning("%s: reset failed; discarding the connection", self._describe(), exc_info=True)
                discard = True
            with self._lock:
                ticket = self._core.checkin_record(rec, self._now(), discard)
            self._wake(ticket)
            self._after_change()
        elif kind == "ping":
            ok = True
            try:
                result = self._hooks.ping(rec.conn)  # type: ignore[misc]
                ok = result is None or bool(result)
            except Exception:
                logger.info("%s: keepalive ping failed on %r", self._describe(), rec.conn, exc_info=True)
                ok = False
            except BaseException:
                with self._lock:
                    self._core.ping_done(rec, False, self._now())
                self._after_change()
                raise
            with self._lock:
                ticket = self._core.ping_done(rec, ok, self._now())
            self._wake(ticket)
            self._after_change()
        else:
            self._close_conn(rec.conn)

    def _housekeeper(self) -> None:
        """Applies the time rules (lifetime, idle, keepalive, leaks, waiters' deadlines) when due."""
        core = self._core
        while True:
            with self._lock:
                if core.closed or core is not self._core:
                    return
                self._wakeup.clear()
                pings, leaks, expired = core.housekeep(self._now())
                wake_at = core.wake_at
            for ticket in expired:
                ticket.waker.set()
            for rec in pings:
                self._submit(("ping", rec))
            for rec in leaks:
                self._report_leak(rec)
            self._after_change()
            delay = wake_at - self._now()
            if delay > 0:
                self._wakeup.wait(None if wake_at == math.inf else delay)

    def _close_conn(self, conn: Any) -> None:
        try:
            (self._hooks.close or default_close)(conn)
        except Exception:
            logger.warning("%s: error closing %r", self._describe(), conn, exc_info=True)

    def _close_inline(self, records: list[Record]) -> None:
        for rec in records:
            self._close_conn(rec.conn)

    def _connect_worker(self) -> None:
        core = self._core
        sched = self._sched
        while True:
            started = self._now()
            conn = _NO_CONN
            try:
                with sched.timeout(self._connect_timeout):
                    conn = self._hooks.connect()
            except Exception as exc:
                if conn is not _NO_CONN:
                    # connect() returned, then the (soft, threading) timeout fired: the
                    # attempt counts as failed, and what it opened is closed, not leaked
                    self._close_conn(conn)
                with self._lock:
                    delay = core.connect_failed(exc)
                    due = self._outage_due(self._now())
                logger.warning("%s: connect failed: %r", self._describe(), exc)
                if due:
                    self._report_outage()
                if delay is None:
                    return
                if self._stopping.wait(delay):
                    with self._lock:
                        core.connect_cancelled()
                    return
                continue
            except BaseException:
                with self._lock:
                    core.connect_cancelled()
                raise
            now = self._now()
            with self._lock:
                ticket = core.connect_done(conn, now, now - started)
            self._wake(ticket)
            self._changed.set()
            self._after_change()
            return

    def _report_outage(self) -> None:
        self._log_outage()
        try:
            self._reconnect_failed(self)
        except Exception:
            logger.exception("%s: the reconnect_failed callback raised", self._describe())


_NO_CONN: Any = object()  # no connection yet (see _connect_worker)


class _Checkout(Generic[C]):
    """What ``Pool.connection()`` returns (a class, not a generator: cheaper, and exact)."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    def __enter__(self) -> C:
        self._conn = self._pool.acquire(self._timeout)
        return self._conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pool = self._pool
        pool.release(self._conn, discard=pool._should_discard(exc))


def _resolve_sync_backend(backend: Any) -> SyncScheduler:
    if isinstance(backend, str):
        name = detect_sync_backend() if backend == "auto" else backend
        scheduler = get_backend(name)
        if not isinstance(scheduler, SyncScheduler) or getattr(scheduler, "family", "") != "sync":
            raise Pool._family_error(name)
        return scheduler
    if getattr(backend, "family", None) == "async":
        raise Pool._family_error(getattr(backend, "name", repr(backend)))
    if not isinstance(backend, SyncScheduler):
        raise TypeError(
            "backend must be a backend name ('auto', 'threading', 'gevent', 'eventlet') or an object "
            f"implementing connpool.backends.SyncScheduler, got {backend!r}"
        )
    return backend
