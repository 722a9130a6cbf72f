"""The eventlet scheduler: green threads and eventlet's own primitives.

Only eventlet's native objects are used (its hub's timers, ``eventlet.queue``,
``eventlet.Timeout``), never the standard library's, even when the process is
monkey-patched: a patched :mod:`queue` may switch inside a non-blocking
``put``.  :class:`eventlet.event.Event` is one-shot, so the event here is a
small reusable one written on the hub.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, final

import eventlet
import eventlet.hubs
import eventlet.queue
from greenlet import GreenletExit, getcurrent

from ._base import SyncEvent, SyncLock, SyncQueue, TaskHandle
from ._green import GreenQueue, GreenTimeout
from ._threading import NOOP_LOCK, _task_name

__all__ = ["EventletScheduler"]

logger = logging.getLogger("connpool")


def _run_logged(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    """Run ``fn(*args)`` in a green thread; log what escapes it so eventlet's hub never prints it.

    ``GreenletExit`` (a kill), ``SystemExit`` and ``KeyboardInterrupt`` keep
    eventlet's own handling.  Anything else, including a stray
    ``eventlet.Timeout``, is logged to the ``connpool`` logger.
    """
    try:
        fn(*args)
    except (GreenletExit, SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        logger.exception("connpool: unhandled error in background green thread %s", _task_name(fn))


@final
class _Waiter:
    """One green thread parked in :meth:`_EventletEvent.wait`.

    ``greenlet`` is cleared as soon as the waiter is woken or leaves ``wait``,
    so a late wake-up (a timer, or a ``set()`` racing an exception) never
    switches into a green thread that is doing something else.
    """

    __slots__ = ("fired", "greenlet")

    def __init__(self, greenlet: Any) -> None:
        self.greenlet: Any = greenlet
        self.fired = False

    def wake(self) -> None:
        greenlet = self.greenlet
        if greenlet is not None:
            self.greenlet = None
            greenlet.switch()


def _wake_all(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.wake()


@final
class _EventletEvent:
    """A reusable event on eventlet's hub: ``set``, ``clear``, ``is_set``, ``wait(timeout) -> bool``.

    ``set()`` never switches: it marks the current waiters as fired and
    schedules their wake-up on the hub.  A waiter returns ``True`` once
    ``set()`` has fired it, even if the event was cleared again before it ran.
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[_Waiter] | None = None

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter (on the hub's next turn); never switches."""
        if self._flag:
            return
        self._flag = True
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for waiter in waiters:
                waiter.fired = True
            eventlet.hubs.get_hub().schedule_call_global(0, _wake_all, waiters)

    def clear(self) -> None:
        """Reset the flag."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (``True``) or until ``timeout`` seconds pass (``False``)."""
        if self._flag:
            return True
        if timeout is not None and timeout <= 0:
            return False
        hub = eventlet.hubs.get_hub()
        waiter = _Waiter(getcurrent())
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        timer = None if timeout is None else hub.schedule_call_global(timeout, waiter.wake)
        try:
            hub.switch()
            return waiter.fired
        finally:
            waiter.greenlet = None
            if timer is not None:
                timer.cancel()
            if not waiter.fired and self._waiters is not None:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def __repr__(self) -> str:
        return f"<_EventletEvent set={self._flag} waiters={len(self._waiters or ())}>"


@final
class _EventletWaiter:
    """A one-shot wake-up for one green thread: parks on the hub, no event bookkeeping.

    ``set()`` never switches: it schedules the wake-up on the hub.  The
    wake-up and the timeout timer switch into the green thread only while it
    still waits here, so a late one is a no-op.
    """

    # Class-level defaults and no __init__: a waiter is made on every wait that blocks, and
    # this way making one runs no Python frame.
    _greenlet: Any = None
    _fired = False

    def set(self) -> None:
        """Wake the waiting green thread (or let its coming ``wait`` return at once)."""
        if self._fired:
            return
        self._fired = True
        if self._greenlet is not None:
            eventlet.hubs.get_hub().schedule_call_global(0, self._wake)

    def _wake(self) -> None:
        greenlet = self._greenlet
        if greenlet is not None:
            self._greenlet = None
            greenlet.switch()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (``True``) or until ``timeout`` seconds pass (``False``)."""
        if self._fired:
            return True
        if timeout is not None and timeout <= 0:
            return False
        hub = eventlet.hubs.get_hub()
        self._greenlet = getcurrent()
        timer = None if timeout is None else hub.schedule_call_global(timeout, self._wake)
        try:
            hub.switch()
            return self._fired
        finally:
            self._greenlet = None
            if timer is not None:
                timer.cancel()


@final
class _GreenThreadHandle:
    """A :class:`TaskHandle` for an eventlet ``GreenThread``."""

    __slots__ = ("_finished", "_thread")

    def __init__(self, thread: Any) -> None:
        self._thread = thread
        self._finished = _EventletEvent()
        # Links also run when the green thread is killed before it started.
        thread.link(self._on_exit)

    def _on_exit(self, _thread: Any) -> None:
        self._finished.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the green thread finished; ``True`` if it did within ``timeout``."""
        if self.done():
            return True
        return self._finished.wait(timeout)

    def done(self) -> bool:
        """Whether the green thread finished."""
        return self._finished.is_set() or bool(self._thread.dead)

    def __repr__(self) -> str:
        return f"<_GreenThreadHandle {self._thread!r} done={self.done()}>"


@final
class EventletScheduler:
    """The :class:`~connpool.backends.SyncScheduler` for eventlet.

    ``spawn`` starts a green thread (:func:`eventlet.spawn`), events are
    reusable events on eventlet's hub, queues wrap
    :class:`eventlet.queue.LightQueue`, ``timeout`` is an
    :class:`eventlet.Timeout` (it interrupts the block at its next switch), and
    ``lock()`` is a shared no-op lock.  Works with or without monkey-patching.
    """

    __slots__ = ()

    name: str = "eventlet"
    family: Literal["sync"] = "sync"

    def spawn(self, fn: Callable[..., object], *args: Any) -> TaskHandle:
        """Run ``fn(*args)`` in a new green thread; an escaping exception is logged to ``connpool``."""
        return _GreenThreadHandle(eventlet.spawn(_run_logged, fn, args))

    def sleep(self, seconds: float) -> None:
        """Suspend the calling green thread; ``sleep(0)`` lets the others run."""
        eventlet.sleep(max(0.0, seconds))

    def event(self) -> SyncEvent:
        """A new, unset, reusable event."""
        return _EventletEvent()

    #: A one-shot wake-up for one green thread (parked on the hub).
    #: (The class itself, so that a wait costs no factory call.)
    waiter = staticmethod(_EventletWaiter)

    def queue(self) -> SyncQueue[Any]:
        """A new, empty unbounded queue on eventlet's own queue."""
        return GreenQueue(eventlet.queue.LightQueue(), eventlet.queue.Empty)

    def timeout(self, seconds: float | None) -> GreenTimeout:
        """An :class:`eventlet.Timeout` turned into :class:`TimeoutError` when it, not another one, fires.

        The block is interrupted at its next switch point after ``seconds``.
        An unrelated ``eventlet.Timeout`` passing through is re-raised
        untouched.  ``None`` means no timeout.
        """
        return GreenTimeout(seconds, eventlet.Timeout, eventlet.Timeout.cancel)  # starts at once

    def lock(self) -> SyncLock:
        """The shared no-op lock: sections that never switch cannot interleave on eventlet."""
        return NOOP_LOCK

    # :func:`time.monotonic` itself (a C function: no Python frame on the hot path).
    monotonic = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "<EventletScheduler>"
