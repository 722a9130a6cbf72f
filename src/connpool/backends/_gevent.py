"""The gevent scheduler: greenlets and gevent's own primitives.

Only gevent's native objects are used (``gevent.event``, ``gevent.queue``,
``gevent.Timeout``), never the standard library's, even when the process is
monkey-patched: a patched :mod:`queue` may switch inside a non-blocking
``put`` and lose an item when a ``gevent.Timeout`` fires there (gevent issue
1875, urllib3 issue 3289).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal, final

import gevent
import gevent.event
import gevent.queue
from gevent.hub import Waiter, get_hub
from greenlet import GreenletExit

from ._base import SyncEvent, SyncLock, SyncQueue, TaskHandle
from ._green import GreenQueue, GreenTimeout
from ._threading import NOOP_LOCK, _task_name

__all__ = ["GeventScheduler"]

logger = logging.getLogger("connpool")


def _run_logged(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    """Run ``fn(*args)`` in a greenlet; log what escapes it so gevent's hub never prints it.

    ``GreenletExit`` (a kill), ``SystemExit`` and ``KeyboardInterrupt`` keep
    gevent's own handling.  Anything else, including a stray ``gevent.Timeout``,
    is logged to the ``connpool`` logger.
    """
    try:
        fn(*args)
    except (GreenletExit, SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        logger.exception("connpool: unhandled error in background greenlet %s", _task_name(fn))


@final
class _GreenletHandle:
    """A :class:`TaskHandle` for a :class:`gevent.Greenlet`."""

    __slots__ = ("_greenlet",)

    def __init__(self, greenlet: Any) -> None:
        self._greenlet = greenlet

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the greenlet finished; ``True`` if it did within ``timeout``."""
        self._greenlet.join(timeout)
        return bool(self._greenlet.ready())

    def done(self) -> bool:
        """Whether the greenlet finished."""
        return bool(self._greenlet.ready())

    def __repr__(self) -> str:
        return f"<_GreenletHandle {self._greenlet!r}>"


@final
class _GeventWaiter:
    """A one-shot wake-up for one greenlet: a hub :class:`gevent.hub.Waiter` and a raw loop timer.

    ``set()`` schedules the switch on the hub (as ``gevent.queue`` does), so
    it never switches itself; the timeout is a libev/libuv timer, not a
    ``gevent.Timeout``.  A switch arriving after the wait ended (set and
    timeout racing) only stores a value in the spent ``Waiter``.
    """

    # Class-level defaults and no __init__: a waiter is made on every wait that blocks, and
    # this way making one runs no Python frame.
    _waiter: Waiter[Any] | None = None
    _woken = False

    def set(self) -> None:
        """Wake the waiting greenlet (or let its coming ``wait`` return at once)."""
        if self._woken:
            return
        self._woken = True
        waiter = self._waiter
        if waiter is not None:
            waiter.hub.loop.run_callback(waiter.switch, True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling greenlet until set (``True``) or until ``timeout`` seconds pass (``False``)."""
        if self._woken:
            return True
        hub = get_hub()
        waiter = self._waiter = Waiter(hub)
        if timeout is None:
            try:
                return bool(waiter.get())
            finally:
                self._waiter = None
        timer = hub.loop.timer(max(0.0, timeout))
        timer.start(waiter.switch, False)
        try:
            return bool(waiter.get())
        finally:
            self._waiter = None
            timer.close()


def _start_timeout(seconds: float) -> gevent.Timeout:
    timer = gevent.Timeout(seconds)
    timer.start()
    return timer


@final
class GeventScheduler:
    """The :class:`~connpool.backends.SyncScheduler` for gevent.

    ``spawn`` starts a :class:`gevent.Greenlet`, events are
    :class:`gevent.event.Event`, queues wrap :class:`gevent.queue.SimpleQueue`,
    ``timeout`` is a :class:`gevent.Timeout` (it interrupts the block at its
    next switch), and ``lock()`` is a shared no-op lock.  Works with or
    without monkey-patching.
    """

    __slots__ = ()

    name: str = "gevent"
    family: Literal["sync"] = "sync"

    def spawn(self, fn: Callable[..., object], *args: Any) -> TaskHandle:
        """Run ``fn(*args)`` in a new greenlet; an escaping exception is logged to ``connpool``."""
        return _GreenletHandle(gevent.spawn(_run_logged, fn, args))

    def sleep(self, seconds: float) -> None:
        """Suspend the calling greenlet; ``sleep(0)`` lets the others run."""
        gevent.sleep(max(0.0, seconds))

    def event(self) -> SyncEvent:
        """A new, unset :class:`gevent.event.Event` (reusable: ``clear()`` resets it)."""
        event: SyncEvent = gevent.event.Event()
        return event

    #: A one-shot wake-up for one greenlet (a hub ``Waiter``; a loop timer for the timeout).
    #: (The class itself, so that a wait costs no factory call.)
    waiter = staticmethod(_GeventWaiter)

    def queue(self) -> SyncQueue[Any]:
        """A new, empty unbounded queue on gevent's own queue."""
        return GreenQueue(gevent.queue.SimpleQueue(), gevent.queue.Empty)

    def timeout(self, seconds: float | None) -> GreenTimeout:
        """A :class:`gevent.Timeout` turned into :class:`TimeoutError` when it, not another one, fires.

        The block is interrupted at its next switch point after ``seconds``.
        An unrelated ``gevent.Timeout`` passing through is re-raised untouched.
        ``None`` means no timeout.
        """
        return GreenTimeout(seconds, _start_timeout, gevent.Timeout.close)

    def lock(self) -> SyncLock:
        """The shared no-op lock: sections that never switch cannot interleave on gevent."""
        return NOOP_LOCK

    # :func:`time.monotonic` itself (a C function: no Python frame on the hot path).
    monotonic = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "<GeventScheduler>"
