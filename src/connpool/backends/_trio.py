"""The trio scheduler: tasks, cancel scopes and trio's clock.

Background work that is not tied to a caller's scope runs as a trio *system
task*; work tied to a scope runs in a nursery (:meth:`TrioScheduler.task_group`).
Events and queues can be created outside ``trio.run`` and used inside it;
``set()`` and ``put()`` that must wake a waiting task have to run in trio's
thread, as every trio call does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, cast, final

import outcome
import trio

from ._base import AsyncEvent, AsyncLock, AsyncQueue

__all__ = ["TrioScheduler"]

logger = logging.getLogger("connpool")


def _task_name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


async def _run_logged(fn: Callable[..., Awaitable[object]], *args: Any) -> None:
    """Await ``fn(*args)``; log what escapes it, except :class:`trio.Cancelled`.

    An exception group mixing ``Cancelled`` with errors has its errors logged
    and its ``Cancelled`` part re-raised.  ``KeyboardInterrupt`` and
    ``SystemExit`` propagate.
    """
    try:
        await fn(*args)
    except Exception:
        logger.exception("connpool: unhandled error in background task %s", _task_name(fn))
    except BaseException as exc:
        split = getattr(exc, "split", None)  # a BaseExceptionGroup (builtin on 3.11+)
        if split is None:
            raise
        cancelled, rest = split(trio.Cancelled)
        if rest is not None:
            logger.exception("connpool: unhandled error in background task %s", _task_name(fn), exc_info=rest)
        if cancelled is not None:
            raise cancelled from None


# ------------------------------------------------------------------- event


@final
class _TrioEvent:
    """A reusable event on a :class:`trio.lowlevel.ParkingLot` (``trio.Event`` cannot be cleared).

    Creatable outside ``trio.run``; ``wait`` and a ``set`` that wakes
    waiters must run inside it.
    """

    __slots__ = ("_flag", "_lot")

    def __init__(self) -> None:
        self._flag = False
        self._lot: trio.lowlevel.ParkingLot | None = None

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter; a plain call."""
        if self._flag:
            return
        self._flag = True
        lot = self._lot
        if lot is not None and lot:
            lot.unpark_all()

    def clear(self) -> None:
        """Reset the flag."""
        self._flag = False

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set (``True``) or until ``timeout`` seconds pass (``False``).

        Returns at once, without a checkpoint, when the event is already set.
        A waiter woken by ``set()`` returns ``True`` even if its deadline
        passed in the meantime.  Cancellation propagates unchanged.
        """
        if self._flag:
            return True
        if timeout is not None and timeout <= 0:
            return False
        lot = self._lot
        if lot is None:
            lot = self._lot = trio.lowlevel.ParkingLot()
        if timeout is None:
            await lot.park()
            return True
        with trio.move_on_after(timeout):
            await lot.park()
            return True
        return False

    def __repr__(self) -> str:
        return f"<_TrioEvent set={self._flag} waiters={len(self._lot) if self._lot else 0}>"


@final
class _TrioWaiter:
    """A one-shot wake-up for one task: it parks with ``wait_task_rescheduled``.

    ``set()`` reschedules the parked task directly (no parking lot); a
    cancellation (or the timeout's cancel scope) aborts the park and clears
    the task, so a later ``set()`` does nothing.
    """

    # Class-level defaults and no __init__: a waiter is made on every wait that blocks, and
    # this way making one runs no Python frame.
    _task: trio.lowlevel.Task | None = None
    _woken = False

    def set(self) -> None:
        """Wake the waiting task (or let its coming ``wait`` return at once); a plain call."""
        if self._woken:
            return
        self._woken = True
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task, outcome.Value(True))

    def _abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wait(self, timeout: float | None = None) -> Awaitable[bool]:
        """Wait until set (``True``) or until ``timeout`` seconds pass (``False``).

        Returns at once, without a checkpoint, when already set.  A wait with
        no timeout is trio's own ``wait_task_rescheduled`` (no extra frame).
        """
        if timeout is None:
            if self._woken:
                return self._wait(math.inf)
            self._task = trio.lowlevel.current_task()
            return trio.lowlevel.wait_task_rescheduled(self._abort)
        return self._wait(timeout)

    async def _wait(self, timeout: float) -> bool:
        if self._woken:
            return True
        if timeout is not None and timeout <= 0:
            return False
        self._task = trio.lowlevel.current_task()
        with trio.move_on_after(timeout):
            return bool(await trio.lowlevel.wait_task_rescheduled(self._abort))
        return False


# ------------------------------------------------------------------- queue


@final
class _TrioQueue:
    """An unbounded FIFO queue on ``trio.open_memory_channel(math.inf)``.

    Creatable outside ``trio.run``.  An item handed to a getter whose
    timeout fires at that moment is still returned, never lost.
    """

    __slots__ = ("_receive", "_send")

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Any](math.inf)

    def put(self, item: Any) -> None:
        """Append ``item``; a plain call that never blocks."""
        self._send.send_nowait(item)

    async def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; raise :class:`TimeoutError` if none arrives in time."""
        if timeout is None:
            return await self._receive.receive()
        try:
            item = self._receive.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            return item  # no checkpoint: a cancellation here would lose the item
        with trio.move_on_after(max(0.0, timeout)):
            return await self._receive.receive()
        raise TimeoutError(f"no item arrived within {timeout} s")

    def qsize(self) -> int:
        """Number of queued items."""
        return self._send.statistics().current_buffer_used


# ----------------------------------------------------------------- timeout


@final
class _TrioTimeout:
    """A cancel scope with a deadline whose own expiry, and only that, becomes :class:`TimeoutError`.

    A cancellation of an enclosing scope passes through untouched.
    """

    __slots__ = ("_scope", "_seconds")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._scope: trio.CancelScope | None = None

    async def __aenter__(self) -> None:
        if self._seconds is not None:
            scope = trio.move_on_after(max(0.0, self._seconds))
            scope.__enter__()
            self._scope = scope

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        scope, self._scope = self._scope, None
        if scope is None:
            return False
        suppress = scope.__exit__(exc_type, exc, tb)
        if scope.cancelled_caught:
            raise TimeoutError(f"timed out after {self._seconds} s") from None
        return suppress


# -------------------------------------------------------------- task group


@final
class _TrioTaskGroup:
    """A nursery whose tasks log their failures instead of cancelling their siblings.

    ``cancel()`` cancels the nursery's cancel scope: the tasks *and* what is
    left of the ``async with`` body are cancelled, as with any nursery.
    """

    __slots__ = ("_manager", "_nursery")

    def __init__(self) -> None:
        self._manager: Any = None
        self._nursery: trio.Nursery | None = None

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` in the nursery; an exception escaping it is logged."""
        if self._nursery is None:
            raise RuntimeError("spawn() needs the task group to be entered with 'async with'")
        self._nursery.start_soon(_run_logged, fn, *args, name=_task_name(fn))

    def cancel(self) -> None:
        """Cancel the nursery's cancel scope; leaving the group then waits for the tasks."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def __aenter__(self) -> _TrioTaskGroup:
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._manager = manager
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        manager, self._manager = self._manager, None
        try:
            suppress: bool | None = await manager.__aexit__(exc_type, exc, tb)
        finally:
            self._nursery = None
        return suppress


# --------------------------------------------------------------- scheduler


@final
class TrioScheduler:
    """The :class:`~connpool.backends.AsyncScheduler` for trio.

    ``spawn`` starts a system task (not tied to the caller's nursery),
    ``task_group`` wraps a nursery, events park on a
    :class:`trio.lowlevel.ParkingLot`, queues are unbounded memory channels,
    ``timeout`` is a cancel scope, ``lock()`` is a :class:`trio.Lock`, and
    ``monotonic`` reads trio's clock inside ``trio.run`` (so ``MockClock``
    applies).
    """

    __slots__ = ()

    name: str = "trio"
    family: Literal["async"] = "async"

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` as a trio system task; an escaping exception (not ``Cancelled``) is logged.

        System tasks are cancelled when ``trio.run``'s main task ends.
        """
        trio.lowlevel.spawn_system_task(_run_logged, fn, *args, name=_task_name(fn))

    def task_group(self) -> _TrioTaskGroup:
        """A nursery whose tasks' failures are logged; ``cancel()`` cancels its cancel scope."""
        return _TrioTaskGroup()

    async def sleep(self, seconds: float) -> None:
        """:func:`trio.sleep`; ``sleep(0)`` is a checkpoint."""
        await trio.sleep(max(0.0, seconds))

    def event(self) -> AsyncEvent:
        """A new, unset, reusable event (creatable outside ``trio.run``)."""
        return _TrioEvent()

    #: A one-shot wake-up for one task (a direct park and reschedule).
    #: (The class itself, so that a wait costs no factory call.)
    waiter = staticmethod(_TrioWaiter)

    # A cancellation point and a yield to other tasks; trio's own function, no extra frame.
    checkpoint = staticmethod(trio.lowlevel.checkpoint)

    def queue(self) -> AsyncQueue[Any]:
        """A new, empty unbounded queue (creatable outside ``trio.run``)."""
        return _TrioQueue()

    def timeout(self, seconds: float | None) -> _TrioTimeout:
        """A cancel scope raising :class:`TimeoutError` after ``seconds`` (``None``: never).

        Only this scope's own deadline is converted; the cancellation of an
        enclosing scope passes through untouched.
        """
        return _TrioTimeout(seconds)

    def lock(self) -> AsyncLock:
        """A new :class:`trio.Lock`."""
        # cast: AsyncLock declares ``__aexit__(*exc_info)``, which no real lock's signature matches.
        return cast(AsyncLock, trio.Lock())

    def clock(self) -> Callable[[], float]:
        """A function reading what :meth:`monotonic` reads, bound to the current run's clock.

        Call it inside ``trio.run``: it returns the run's ``clock.current_time``
        (one call per reading instead of four).  A subclass that overrides
        :meth:`monotonic` gets its own ``monotonic`` back.
        """
        if type(self).monotonic is not TrioScheduler.monotonic:
            return self.monotonic
        return trio.lowlevel.current_clock().current_time

    def monotonic(self) -> float:
        """Trio's clock inside ``trio.run`` (so ``MockClock`` applies), else :func:`time.monotonic`."""
        try:
            return trio.current_time()
        except RuntimeError:
            return time.monotonic()

    def running(self) -> bool:
        """Whether the calling code runs inside ``trio.run``."""
        try:
            trio.lowlevel.current_root_task()
        except RuntimeError:
            return False
        return True

    def __repr__(self) -> str:
        return "<TrioScheduler>"
