"""What ``Pool`` and ``AsyncPool`` share: options, hooks, release, stats.

Everything here is plain (no ``await``), so both façades use it unchanged.
The family-specific parts -- waiting in ``acquire``, background workers,
``open``/``close`` -- live in :mod:`connpool._sync` and :mod:`connpool._async`.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Callable
from numbers import Real
from typing import Any, Generic, TypeVar

from ._core import IDLE, Core, Record, Ticket
from ._errors import PoolClosed
from ._stats import PoolStats
from .backends._threading import NOOP_LOCK

__all__ = ["UNSET", "BasePool", "Hooks"]

logger = logging.getLogger("connpool")

C = TypeVar("C")


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


#: Marks an argument left out (``timeout=UNSET`` means "the pool's default").
UNSET: Any = _Unset()

#: In ``release``: the connection went to its reset hook (no waiter to wake yet).
_RESETTING: Any = object()


def check_seconds(name: str, value: Any, *, allow_none: bool = True, allow_zero: bool = True) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``value`` is a valid duration."""
    if value is None:
        if allow_none:
            return
        raise TypeError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        rule = "at least 0" if allow_zero else "greater than 0"
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        kinds = "an int or None" if allow_none else "an int"
        raise TypeError(f"{name} must be {kinds}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


class Hooks:
    """The user's callables, resolved from arguments and an optional connector object."""

    __slots__ = ("check", "close", "connect", "connector", "ping", "reset")

    def __init__(
        self,
        connect: Any,
        *,
        close: Callable[[Any], Any] | None,
        check: Callable[[Any], Any] | None,
        reset: Callable[[Any], Any] | None,
        ping: Callable[[Any], Any] | None,
    ) -> None:
        connector = None
        if not inspect.isroutine(connect) and callable(getattr(connect, "connect", None)):
            connector = connect
            connect = connector.connect
        if not callable(connect):
            raise TypeError(
                "connect must be a callable returning a new connection, or a connector object "
                f"with a connect() method; got {type(connect).__name__}"
            )
        self.connect: Callable[[], Any] = connect
        self.connector = connector
        self.close = close if close is not None else getattr(connector, "close", None)
        self.check = check if check is not None else getattr(connector, "check", None)
        self.reset = reset if reset is not None else getattr(connector, "reset", None)
        self.ping = ping if ping is not None else getattr(connector, "ping", None)
        for hook_name in ("close", "check", "reset", "ping"):
            hook = getattr(self, hook_name)
            if hook is not None and not callable(hook):
                raise TypeError(f"{hook_name} must be callable or None, got {type(hook).__name__}")


def default_close(conn: Any) -> Any:
    """Close ``conn`` with its own ``close()`` method when it has one."""
    close = getattr(conn, "close", None)
    if close is not None:
        return close()
    return None


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # frames left out of leak reports

_POOLS: weakref.WeakSet[BasePool[Any]] = weakref.WeakSet()
# Connections inherited from the parent process: kept referenced so that the child
# never closes them (not even by garbage collection) while the parent uses them.
_FORK_ORPHANS: list[Any] = []


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _current_holder() -> str:
    """Who is running: the asyncio/trio task, the greenlet, or the thread."""
    try:
        import sniffio

        library = sniffio.current_async_library()
    except Exception:
        library = None
    if library == "asyncio":
        import asyncio

        return f"asyncio task {asyncio.current_task()!r}"
    if library == "trio":
        trio = sys.modules["trio"]
        return f"trio task {trio.lowlevel.current_task().name!r}"
    greenlet = sys.modules.get("greenlet")
    if greenlet is not None:
        current = greenlet.getcurrent()
        if current.parent is not None:
            return f"greenlet {current!r}"
    return f"thread {threading.current_thread().name!r}"


def _not_started() -> float:
    raise PoolClosed("the pool was never opened")


class BasePool(Generic[C]):
    """State and plain operations common to ``Pool`` and ``AsyncPool``."""

    _family: str = ""
    _facade: str = ""
    _other_facade: str = ""

    def __init__(
        self,
        connect: Any,
        *,
        min_size: int,
        max_size: int,
        burst_limit: int | None,
        timeout: float | None,
        max_waiting: int,
        max_lifetime: float | None,
        max_idle: float | None,
        max_uses: int | None,
        check: Callable[[Any], Any] | None,
        check_after: float,
        reset: Callable[[Any], Any] | None,
        close: Callable[[Any], Any] | None,
        ping: Callable[[Any], Any] | None,
        keepalive_interval: float | None,
        leak_timeout: float | None,
        discard_on: type[BaseException] | tuple[type[BaseException], ...],
        lifo: bool,
        name: str | None,
        connect_timeout: float | None,
        max_connecting: int,
        num_workers: int,
        reconnect_failed: Any,
        reconnect_timeout: float,
    ) -> None:
        self._hooks = Hooks(connect, close=close, check=check, reset=reset, ping=ping)
        check_seconds("timeout", timeout)
        check_seconds("check_after", check_after, allow_none=False)
        check_seconds("max_lifetime", max_lifetime, allow_zero=False)
        check_seconds("max_idle", max_idle, allow_zero=False)
        check_seconds("keepalive_interval", keepalive_interval, allow_zero=False)
        check_seconds("leak_timeout", leak_timeout, allow_zero=False)
        if keepalive_interval is not None and self._hooks.ping is None:
            raise ValueError("keepalive_interval needs a ping hook (ping=..., or a connector with ping())")
        check_seconds("connect_timeout", connect_timeout, allow_zero=False)
        _check_int("max_waiting", max_waiting, 0, allow_none=False)
        _check_int("max_uses", max_uses, 1, allow_none=True)
        _check_int("max_connecting", max_connecting, 1, allow_none=False)
        _check_int("num_workers", num_workers, 1, allow_none=False)
        if reconnect_failed is not None and not callable(reconnect_failed):
            kind = type(reconnect_failed).__name__
            raise TypeError(f"reconnect_failed must be callable or None, got {kind}")
        check_seconds("reconnect_timeout", reconnect_timeout, allow_none=False)
        if isinstance(discard_on, type):
            discard_on = (discard_on,)  # a single class is accepted too
        if not isinstance(discard_on, tuple) or not all(
            isinstance(cls, type) and issubclass(cls, BaseException) for cls in discard_on
        ):
            raise TypeError(f"discard_on must be a tuple of exception classes, got {discard_on!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self._core = Core(
            min_size=min_size,
            max_size=max_size,
            burst_limit=burst_limit,
            max_waiting=max_waiting,
            lifo=bool(lifo),
            max_connecting=max_connecting,
            max_uses=max_uses,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            keepalive_interval=keepalive_interval if self._hooks.ping is not None else None,
            leak_timeout=leak_timeout,
        )
        # A checkout does more than hand the connection over: it records the holder or runs a check.
        self._watch_checkout = leak_timeout is not None or self._hooks.check is not None
        self._housekeeping = any(
            v is not None for v in (max_lifetime, max_idle, self._core.keepalive_interval, leak_timeout)
        )
        _POOLS.add(self)
        self._timeout = timeout
        self._check_after = check_after
        self._discard_on = discard_on
        self._connect_timeout = connect_timeout
        self._num_workers = num_workers
        self._reconnect_failed = reconnect_failed
        self._reconnect_timeout = reconnect_timeout
        self._outage_since = 0.0  # when the current run of failed connects began
        self._outage_reported = False  # reconnect_failed was called for it
        self._name = name
        self._lock: Any = NOOP_LOCK  # async runtimes: core calls never interleave
        self._now: Callable[[], float] = _not_started
        self._changed: Any = None  # event: size grew, or the last busy connection came back
        self._wakeup: Any = None  # event: wakes the housekeeper (set when a deadline moves earlier)
        self._opened = False
        self._finished = False  # close() completed: background workers are gone
        self._new_waker: Callable[[], Any] = _not_started
        self._managed = False  # the housekeeper expires waiters' deadlines (no timer per wait)

    def _setup_waits(self, sched: Any) -> None:
        """Choose how callers wait on ``sched``.

        Each wait blocks on a one-shot ``waiter()`` (an ``event()`` if the
        scheduler has none).  Except on threading, where a timed lock acquire
        costs nothing, deadlines are left to the housekeeper (see
        ``Core.timed``): a timer per wait costs a heap push and a cancel.
        """
        self._new_waker = getattr(sched, "waiter", None) or sched.event
        self._managed = sched.name != "threading"

    # ------------------------------------------------------------ properties

    @property
    def name(self) -> str | None:
        """The pool's name (used in logs, errors and stats)."""
        return self._name

    @property
    def backend(self) -> str:
        """The name of the backend (scheduler) the pool runs on."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._core.closed

    def __repr__(self) -> str:
        core = self._core
        state = "closed" if core.closed else ("open" if self._opened else "new")
        return (
            f"<{type(self).__name__} {self._name or ''}({self.backend}) {state} "
            f"size={core.size} idle={len(core.idle)} in_use={len(core.busy)} waiting={core.waiting}>"
        )

    # ------------------------------------------------------- plain operations

    def release(self, conn: C, discard: bool = False) -> None:
        """Give ``conn`` back to the pool; never blocks.

        With ``discard=True`` (or when it expired, reached ``max_uses``, or the
        pool is closing) the connection is closed in the background instead of
        reused, and a replacement is opened if callers wait or ``min_size``
        needs it.  The ``reset`` hook, if any, runs in the background before the
        connection is reused.  Raises ``ValueError`` for an object this pool did
        not hand out, or one already released.
        """
        core = self._core
        lock = self._lock
        lock.acquire()
        try:
            if discard or self._hooks.reset is None:
                now = self._now()
                busy = core.busy
                rec = busy.get(id(conn))  # (a record holds its connection: no id reuse)
                if (
                    rec is None
                    or discard
                    or rec.returning
                    or rec.leaked
                    or rec.expires <= now  # (closed and drained: -inf)
                    or rec.uses >= core.uses_cap
                ):
                    # Core.checkin's general path: a refusal, a connection to close or a leak
                    # to report. (One close() retired by force comes back to nothing.)
                    ticket = core.checkin(conn, now, discard)
                else:
                    # The common return, inlined (one frame less on every release); the
                    # fast-path equivalence test holds it to Core.checkin.
                    del busy[rec.key]
                    core.use_times.append(now - rec.checked_out)
                    if core.waiting:
                        ticket = core.hand_over(rec, now)
                    elif core.place_on_return:
                        ticket = core.place(rec, now)
                    else:
                        rec.returned = now  # (rec.pinged matters only with a keepalive: place sets it)
                        rec.state = IDLE
                        core.idle.append(rec)
                        ticket = None
            else:
                rec = core.begin_return(conn)
                ticket = None if rec is None else _RESETTING
        finally:
            lock.release()
        if ticket is not None:
            if ticket is _RESETTING:
                assert rec is not None
                self._submit(("reset", rec))
                return
            ticket.waker.set()
        if core.attention:
            self._after_change()

    def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change ``min_size`` and/or ``max_size`` at run time (same rules as the constructor)."""
        with self._lock:
            self._core.resize(min_size, max_size)
        self._after_change()

    def drain(self) -> None:
        """Close idle connections now; retire checked-out ones when they return.

        ``min_size`` is refilled with new connections.  Use after a failover
        or a credentials change.
        """
        with self._lock:
            self._core.drain()
        self._after_change()

    def stats(self) -> PoolStats:
        """A consistent :class:`PoolStats` snapshot."""
        with self._lock:
            numbers = self._core.stats()
        return PoolStats(name=self._name, backend=self.backend, **numbers)

    # --------------------------------------------------------------- helpers

    def _submit(self, job: tuple[str, Record]) -> None:
        """Queue background work (``close`` or ``reset`` of a record)."""
        raise NotImplementedError

    def _spawn_connects(self, n: int) -> None:
        raise NotImplementedError

    def _after_change(self) -> None:
        """Carry out what the last core calls left to do: closes, connects."""
        core = self._core
        with self._lock:
            core.attention = False
            closing = core.to_close
            if closing:
                core.to_close = []
            leaks = core.returned_leaks
            if leaks:
                core.returned_leaks = []
            if core.wake_early and self._wakeup is not None:
                self._wakeup.set()
            n = core.plan_connects() if self._opened else 0
        for rec, held in leaks:
            logger.warning(
                "%s: leaked connection %r came back after %.3f s (leak_timeout=%s)",
                self._describe(), rec.conn, held, core.leak_timeout,
            )  # fmt: skip
        for rec in closing:
            self._submit(("close", rec))
        if n:
            self._spawn_connects(n)
        if core.closed and not core.busy:
            self._changed.set()

    def _outage_due(self, now: float) -> bool:
        """After a failed connect: whether to call ``reconnect_failed`` now (once per outage).

        An outage is a run of failed connects (``Core.failures`` counts it and
        drops to 0 on the next success); the callback is due once connects
        have kept failing for ``reconnect_timeout`` seconds.
        """
        if self._core.failures == 1:
            self._outage_since = now
            self._outage_reported = False
        if self._reconnect_failed is None or self._outage_reported:
            return False
        if now - self._outage_since >= self._reconnect_timeout:
            self._outage_reported = True
            return True
        return False

    def _log_outage(self) -> None:
        logger.error(
            "%s: connects have failed for %s s or more (last error: %r); still trying",
            self._describe(), self._reconnect_timeout, self._core.last_error,
        )  # fmt: skip

    def _note_holder(self, rec: Record) -> None:
        """Remember who checked ``rec`` out, for leak reports (only with ``leak_timeout``)."""
        stack = traceback.extract_stack(limit=24)
        rec.holder = (_current_holder(), [f for f in stack if not f.filename.startswith(_PACKAGE_DIR)][-20:])

    def _report_leak(self, rec: Record) -> None:
        holder, stack = rec.holder if isinstance(rec.holder, tuple) else ("unknown", [])
        logger.warning(
            "%s: connection %r held for more than leak_timeout=%s s by %s; acquired at:\n%s",
            self._describe(), rec.conn, self._core.leak_timeout, holder,
            "".join(traceback.format_list(stack)),
        )  # fmt: skip

    def _reset_after_fork(self) -> None:
        """In a forked child: forget the parent's connections (never use or close them)."""
        core = self._core
        if core.closed:
            return
        _FORK_ORPHANS.extend(rec.conn for rec in (*core.idle, *core.busy.values()))
        self._core = core.after_fork()
        self._opened = False
        self._finished = False

    def _deadline(self, timeout: Any, now: float) -> tuple[float | None, float]:
        """``timeout`` as given to ``acquire`` or ``wait`` (``UNSET``: the pool's), and the
        deadline it sets from ``now`` (``math.inf`` for ``None``: no limit)."""
        if timeout is UNSET:
            timeout = self._timeout
        return timeout, math.inf if timeout is None else now + timeout

    def _wake(self, ticket: Ticket | None) -> None:
        if ticket is not None:
            ticket.waker.set()

    def _check_open(self) -> None:
        if self._core.closed:
            raise PoolClosed(f"{self._describe()} is closed")

    def _describe(self) -> str:
        return f"pool {self._name!r}" if self._name else "the pool"

    def _should_discard(self, exc: BaseException | None) -> bool:
        """Whether an exception escaping ``connection()`` means the connection is unusable."""
        if exc is None:
            return False
        return not isinstance(exc, Exception) or isinstance(exc, self._discard_on)

    @classmethod
    def _family_error(cls, backend_name: str) -> ValueError:
        return ValueError(
            f"backend {backend_name!r} is not a {cls._family} runtime: "
            f"use {cls._other_facade} for it ({cls._facade} runs on "
            f"{'threading, gevent and eventlet' if cls._family == 'sync' else 'asyncio and trio'})"
        )
