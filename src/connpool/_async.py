"""``AsyncPool``: the driver for async runtimes (asyncio, trio).

The same thin layer as :mod:`connpool._sync`, with ``await``: it waits on a
scheduler event when the core says to wait, and runs connects, resets and
closes as tasks of a task group the pool owns while it is open (a nursery on
trio, which is why a trio pool must be used with ``async with``).  No lock is
needed: core calls never await, so they cannot interleave.  ``release`` and
the other management calls are plain functions, safe in ``finally`` blocks
and under cancellation.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._core import FAILED, SERVED, Record
from ._pool import UNSET, BasePool, default_close
from .backends import AsyncScheduler, detect_async_backend, get_backend

__all__ = ["AsyncPool"]

logger = logging.getLogger("connpool")

C = TypeVar("C")


def _sleep_zero(sched: AsyncScheduler) -> Callable[[], Awaitable[None]]:
    """A checkpoint for a scheduler without ``checkpoint()``: ``sleep(0)``."""

    def checkpoint() -> Awaitable[None]:
        return sched.sleep(0)

    return checkpoint


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class AsyncPool(BasePool[C], Generic[C]):
    """A connection pool for asyncio or trio code.

    ``connect`` is an async callable returning a new connection (or a
    connector object with an async ``connect()`` method).  Hooks may be plain
    or coroutine functions.  The pool binds to no event loop until it opens,
    so it can be built at module level.  ``backend="auto"`` picks the async
    library running the pool when it opens.

    >>> async with AsyncPool(make_conn, max_size=5) as pool:   # doctest: +SKIP
    ...     async with pool.connection() as conn:
    ...         await conn.send(b"PING")
    """

    _family = "async"
    _facade = "AsyncPool"
    _other_facade = "Pool"

    def __init__(
        self,
        connect: Callable[[], Awaitable[C]] | Any,
        *,
        backend: str | AsyncScheduler = "auto",
        min_size: int = 0,
        max_size: int = 10,
        burst_limit: int | None = None,
        timeout: float | None = 30.0,
        max_waiting: int = 0,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        max_uses: int | None = None,
        check: Callable[[C], Any] | None = None,
        check_after: float = 0.5,
        reset: Callable[[C], Any] | None = None,
        close: Callable[[C], Any] | None = None,
        ping: Callable[[C], Any] | None = None,
        keepalive_interval: float | None = None,
        leak_timeout: float | None = None,
        discard_on: type[BaseException] | tuple[type[BaseException], ...] = (OSError,),
        lifo: bool = True,
        name: str | None = None,
        connect_timeout: float | None = 30.0,
        max_connecting: int = 4,
        num_workers: int = 2,
        reconnect_failed: Callable[[AsyncPool[C]], Any] | None = None,
        reconnect_timeout: float = 60.0,
        checkpoint: bool | None = None,
    ) -> None:
        self._sched: AsyncScheduler | None = None
        self._backend_arg = backend
        if backend != "auto":
            self._sched = _resolve_async_backend(backend)
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
        if checkpoint is not None and not isinstance(checkpoint, bool):
            raise TypeError(f"checkpoint must be True, False or None, got {checkpoint!r}")
        self._checkpoint_arg = checkpoint
        self._checkpoint = False
        self._checkpoint_now: Callable[[], Awaitable[None]]  # set by open(), with _checkpoint
        self._tg: Any = None
        self._tg_cm: Any = None
        self._jobs: Any = None
        self._stopping: Any = None
        self._in_async_with = False

    @property
    def backend(self) -> str:
        """The name of the backend ("auto" until the pool opens and detects it)."""
        return self._sched.name if self._sched is not None else "auto"

    # ----------------------------------------------------------- lifecycle

    async def open(self, wait: bool = False, timeout: float | None = None) -> None:
        """Start the pool: background tasks, and ``min_size`` connections in the background.

        With ``wait=True``, wait until ``min_size`` connections are open
        (``PoolTimeout`` after ``timeout`` seconds, default: the pool's
        ``timeout``).  On trio, use ``async with pool:`` instead: the pool
        owns a nursery, which only ``async with`` can provide.
        """
        self._check_open()
        if not self._opened:
            sched = self._sched
            if sched is None:
                sched = self._sched = _resolve_async_backend(detect_async_backend())
            if getattr(sched, "requires_async_with", sched.name == "trio") and not self._in_async_with:
                raise RuntimeError(
                    f"an AsyncPool on {sched.name} must be opened with `async with pool:` "
                    "(it owns a nursery for its background tasks)"
                )
            clock = getattr(type(sched), "clock", None)  # on the class: wrappers forward only monotonic
            self._now = sched.monotonic if clock is None else clock(sched)
            self._setup_waits(sched)
            self._checkpoint_now = getattr(sched, "checkpoint", None) or _sleep_zero(sched)
            self._changed = sched.event()
            self._stopping = sched.event()
            self._wakeup = sched.event()
            self._jobs = sched.queue()
            self._checkpoint = sched.name == "trio" if self._checkpoint_arg is None else self._checkpoint_arg
            self._tg_cm = sched.task_group()
            self._tg = await self._tg_cm.__aenter__()
            self._opened = True
            self._workers_done = sched.event()
            self._workers_left = self._num_workers
            for _ in range(self._num_workers):
                self._tg.spawn(self._worker)
            if self._housekeeping or self._managed:
                self._tg.spawn(self._housekeeper)
            self._after_change()
        if wait:
            await self.wait(timeout)

    async def wait(self, timeout: float | None = UNSET) -> None:
        """Wait until ``min_size`` connections are open, or raise ``PoolTimeout``."""
        if not self._opened:
            await self.open()
        core = self._core
        timeout, deadline = self._deadline(timeout, self._now())
        while True:
            self._check_open()
            if core.size >= core.min_size:
                return
            self._changed.clear()
            remaining = deadline - self._now()
            if remaining <= 0:
                raise core.timeout_error(timeout or 0.0)
            await self._changed.wait(None if remaining == math.inf else remaining)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool (see ``Pool.close``); idempotent.

        May be called from any task.  Inside ``async with pool:`` the pool's
        task group is left when the block ends (a nursery can only be exited
        by the task that entered it).
        """
        await self._shutdown(timeout)
        if not self._in_async_with:
            await self._leave_task_group()

    async def _shutdown(self, timeout: float) -> None:
        core = self._core
        if core.closed:
            return
        for ticket in core.close():
            ticket.waker.set()
        if not self._opened:
            self._finished = True
            closing, core.to_close = core.to_close, []
            for rec in closing:
                await self._close_conn(rec.conn)
            return
        self._stopping.set()
        self._wakeup.set()
        self._after_change()
        deadline = self._now() + timeout
        try:
            while core.busy:
                remaining = deadline - self._now()
                if remaining <= 0:
                    core.force_close()
                    self._after_change()
                    break
                self._changed.clear()
                await self._changed.wait(remaining)
            for _ in range(self._num_workers):
                self._jobs.put(None)
            # workers finish the jobs they hold (a trio channel hands items over at once)
            await self._workers_done.wait(max(0.0, deadline - self._now()) + 1.0)
        finally:
            self._finished = True
            leftover = [rec.conn for rec in core.to_close]
            core.to_close = []
            while self._jobs.qsize():
                job = await self._jobs.get(0)
                if job is not None:
                    leftover.append(job[1].conn)
            for conn in leftover:
                await self._close_conn(conn)

    def _reset_after_fork(self) -> None:
        super()._reset_after_fork()
        if self._backend_arg == "auto":
            self._sched = None
        self._tg = self._tg_cm = self._jobs = None
        self._in_async_with = False

    async def _leave_task_group(self) -> None:
        cm, self._tg_cm = self._tg_cm, None
        if cm is not None:
            self._tg.cancel()
            await cm.__aexit__(None, None, None)

    async def __aenter__(self) -> AsyncPool[C]:
        self._in_async_with = True
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._shutdown(5.0)
        finally:
            await self._leave_task_group()

    # ------------------------------------------------------------ checkout

    async def acquire(self, timeout: float | None = UNSET) -> C:
        """Return a connection, waiting up to ``timeout`` seconds (default: the pool's).

        ``timeout=0`` never waits; ``None`` waits forever.  Raises
        ``PoolTimeout`` (saying whether all connections were busy or the pool
        cannot connect), ``TooManyWaiters`` or ``PoolClosed``.  Cancelling the
        caller at any point loses nothing, and the cancellation propagates.
        """
        if not self._opened:
            await self.open()
        core = self._core
        deadline = -1.0  # set when the first wait starts
        while True:
            started = self._now()
            # (plain_checkout and no idle record: checkout() would find nothing)
            rec = core.checkout(started) if core.idle or not core.plain_checkout else None
            if rec is None:
                if deadline < 0:
                    timeout, deadline = self._deadline(timeout, started)
                if started >= deadline:
                    core.timeouts += 1
                    if self._checkpoint:
                        await self._checkpoint_now()
                    raise core.timeout_error(timeout or 0.0)
                # The wait, inline (a coroutine less per wait).
                ticket = core.enqueue(started, self._new_waker(), deadline, self._managed)
                if core.attention:
                    self._after_change()  # starts the connects this waiter may need, wakes the housekeeper
                try:
                    if ticket.managed or deadline == math.inf:
                        await ticket.waker.wait(None)
                    else:
                        await ticket.waker.wait(max(0.0, deadline - self._now()))
                except BaseException:
                    self._wake(core.abandon(ticket, self._now()))
                    if core.attention:
                        self._after_change()
                    raise
                if ticket.state != SERVED:
                    if ticket.state == FAILED:
                        raise ticket.error  # type: ignore[misc]
                    raise core.timed_out(ticket, self._now())
                rec = ticket.record
                assert rec is not None
                if core.leak_timeout is not None:
                    self._note_holder(rec)
            elif not (self._checkpoint or core.attention or self._watch_checkout):
                return rec.conn  # type: ignore[no-any-return]  # (the fast path: nothing else to do)
            else:
                if self._checkpoint:
                    # One yield per acquire, as trio requires; waiting was one already.
                    try:
                        await self._checkpoint_now()
                    except BaseException:
                        self._wake(core.unget(rec, self._now()))
                        if core.attention:
                            self._after_change()
                        raise
                if core.leak_timeout is not None:
                    self._note_holder(rec)
                if core.attention:
                    self._after_change()
            check = self._hooks.check
            if check is None or self._now() - rec.returned < self._check_after:
                return rec.conn  # type: ignore[no-any-return]
            if await self._run_check(check, rec):
                return rec.conn  # type: ignore[no-any-return]

    async def _run_check(self, check: Callable[[Any], Any], rec: Record) -> bool:
        try:
            ok = await _maybe_await(check(rec.conn))
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
        self._core.discard_record(rec)
        self._after_change()

    def connection(self, timeout: float | None = UNSET) -> _AsyncCheckout[C]:
        """An async context manager: acquire a connection, give it back when the block ends.

        An exception in ``discard_on`` (default ``OSError``) or one that is
        not an ``Exception`` (cancellation, ``KeyboardInterrupt``...)
        discards the connection; other exceptions return it.
        """
        return _AsyncCheckout(self, timeout)

    # ---------------------------------------------------------- background

    def _submit(self, job: tuple[str, Record]) -> None:
        if not self._finished and self._jobs is not None:
            self._jobs.put(job)
        else:
            self._sched.spawn(self._run_job, job)  # type: ignore[union-attr]

    def _spawn_connects(self, n: int) -> None:
        for _ in range(n):
            self._tg.spawn(self._connect_worker)

    async def _worker(self) -> None:
        jobs = self._jobs
        try:
            while True:
                job = await jobs.get()
                if job is None:
                    return
                await self._run_job(job)
        finally:
            self._workers_left -= 1
            if not self._workers_left:
                self._workers_done.set()

    async def _run_job(self, job: tuple[str, Record]) -> None:
        kind, rec = job
        if kind == "reset":
            discard = False
            try:
                await _maybe_await(self._hooks.reset(rec.conn))  # type: ignore[misc]
            except Exception:
                logger.warning("%s: reset failed; discarding the connection", self._describe(), exc_info=True)
                discard = True
            except BaseException:
                self._core.checkin_record(rec, self._now(), True)
                self._after_change()
                raise
            self._wake(self._core.checkin_record(rec, self._now(), discard))
            self._after_change()
        elif kind == "ping":
            try:
                result = await _maybe_await(self._hooks.ping(rec.conn))  # type: ignore[misc]
                ok = result is None or bool(result)
            except Exception:
                logger.info("%s: keepalive ping failed on %r", self._describe(), rec.conn, exc_info=True)
                ok = False
            except BaseException:
                self._core.ping_done(rec, False, self._now())
                self._after_change()
                raise
            self._wake(self._core.ping_done(rec, ok, self._now()))
            self._after_change()
        else:
            await self._close_conn(rec.conn)

    async def _housekeeper(self) -> None:
        """Applies the time rules (lifetime, idle, keepalive, leaks) when they fall due."""
        core = self._core
        while not core.closed:
            self._wakeup.clear()
            pings, leaks, expired = core.housekeep(self._now())
            for ticket in expired:
                ticket.waker.set()
            for rec in pings:
                self._submit(("ping", rec))
            for rec in leaks:
                self._report_leak(rec)
            self._after_change()
            delay = core.wake_at - self._now()
            if delay > 0:
                await self._wakeup.wait(None if core.wake_at == math.inf else delay)

    async def _close_conn(self, conn: Any) -> None:
        try:
            await _maybe_await((self._hooks.close or default_close)(conn))
        except Exception:
            logger.warning("%s: error closing %r", self._describe(), conn, exc_info=True)

    async def _connect_worker(self) -> None:
        core = self._core
        sched = self._sched
        assert sched is not None
        while True:
            started = self._now()
            try:
                async with sched.timeout(self._connect_timeout):
                    conn = await _maybe_await(self._hooks.connect())
            except Exception as exc:
                delay = core.connect_failed(exc)
                logger.warning("%s: connect failed: %r", self._describe(), exc)
                if self._outage_due(self._now()):
                    await self._report_outage()
                if delay is None:
                    return
                try:
                    stopped = await self._stopping.wait(delay)
                except BaseException:
                    core.connect_cancelled()
                    raise
                if stopped:
                    core.connect_cancelled()
                    return
                continue
            except BaseException:
                core.connect_cancelled()
                raise
            now = self._now()
            self._wake(core.connect_done(conn, now, now - started))
            self._changed.set()
            self._after_change()
            return

    async def _report_outage(self) -> None:
        self._log_outage()
        try:
            await _maybe_await(self._reconnect_failed(self))
        except Exception:
            logger.exception("%s: the reconnect_failed callback raised", self._describe())


class _AsyncCheckout(Generic[C]):
    """What ``AsyncPool.connection()`` returns."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    async def __aenter__(self) -> C:
        self._conn = await self._pool.acquire(self._timeout)
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pool = self._pool
        pool.release(self._conn, discard=pool._should_discard(exc))


def _resolve_async_backend(backend: Any) -> AsyncScheduler:
    if isinstance(backend, str):
        scheduler = get_backend(backend)
        if getattr(scheduler, "family", "") != "async":
            raise AsyncPool._family_error(backend)
        return scheduler  # type: ignore[return-value]
    if getattr(backend, "family", None) == "sync":
        raise AsyncPool._family_error(getattr(backend, "name", repr(backend)))
    if not isinstance(backend, AsyncScheduler):
        raise TypeError(
            "backend must be a backend name ('auto', 'asyncio', 'trio') or an object implementing "
            f"connpool.backends.AsyncScheduler, got {backend!r}"
        )
    return backend
