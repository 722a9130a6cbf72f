"""The asyncio scheduler: tasks, futures and the running loop's timers.

Nothing here binds to an event loop when it is created: events and queues
create a future on the running loop only while a task waits on them, so an
object made at import time works inside any later ``asyncio.run()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, cast, final

import sniffio

from ._base import AsyncEvent, AsyncLock, AsyncQueue

__all__ = ["AsyncioScheduler"]

logger = logging.getLogger("connpool")


def _task_name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


async def _run_logged(fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
    """Await ``fn(*args)``; log an escaping :class:`Exception` instead of leaving it to the loop.

    Cancellation, ``KeyboardInterrupt`` and ``SystemExit`` propagate as usual.
    """
    try:
        await fn(*args)
    except Exception:
        logger.exception("connpool: unhandled error in background task %s", _task_name(fn))


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


# ------------------------------------------------------------------- event


@final
class _AsyncioEvent:
    """A cheap reusable event: one future per waiting task, ``loop.call_later`` for the timeout.

    Unlike :class:`asyncio.Event` it binds to no loop: each ``wait`` makes a
    future on the loop running it.  ``set()`` and ``clear()`` are plain calls
    that must run in the thread of the loop whose tasks wait.
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter; never blocks."""
        if self._flag:
            return
        self._flag = True
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for fut in waiters:
                _resolve(fut, True)

    def clear(self) -> None:
        """Reset the flag."""
        self._flag = False

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set (``True``) or until ``timeout`` seconds pass (``False``).

        Returns at once, without yielding, when the event is already set.
        Cancellation of the waiting task propagates unchanged.
        """
        if self._flag:
            return True
        if timeout is not None and timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(fut)
        handle = None if timeout is None else loop.call_later(timeout, _resolve, fut, False)
        try:
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            waiters = self._waiters
            if waiters is not None:  # still listed unless set() took the list
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)

    def __repr__(self) -> str:
        return f"<_AsyncioEvent set={self._flag} waiters={len(self._waiters or ())}>"


@final
class _AsyncioWaiter:
    """A one-shot wake-up for one task: one future, ``loop.call_later`` only for a timeout."""

    # Class-level defaults and no __init__: a waiter is made on every wait that blocks, and
    # this way making one runs no Python frame.
    _fut: asyncio.Future[bool] | None = None
    _woken = False

    def set(self) -> None:
        """Wake the waiting task (or let its coming ``wait`` return at once)."""
        if self._woken:
            return
        self._woken = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(True)

    def wait(self, timeout: float | None = None) -> Awaitable[bool]:
        """Wait until set (``True``) or until ``timeout`` seconds pass (``False``).

        Returns at once, without yielding, when already set.  A wait with no
        timeout is the future itself (no coroutine of its own on the way).
        """
        if timeout is None and not self._woken:
            fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._fut = fut
            return fut
        return self._wait(timeout)

    async def _wait(self, timeout: float | None) -> bool:
        if self._woken:
            return True
        if timeout is None or timeout <= 0:  # (None: only when already woken, see wait)
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._fut = fut
        handle = fut.get_loop().call_later(timeout, _resolve, fut, False)
        try:
            return await fut
        finally:
            handle.cancel()


# ------------------------------------------------------------------- queue


def _wake_getter(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


@final
class _AsyncioQueue:
    """An unbounded FIFO queue: a deque of items and a deque of waiting getters' futures.

    ``put`` appends the item and wakes the oldest getter; the getter takes the
    item itself when it runs, so a getter cancelled at that moment loses
    nothing (it passes the wake-up on to the next getter).
    """

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._getters: deque[asyncio.Future[bool]] = deque()

    def put(self, item: Any) -> None:
        """Append ``item``; a plain call that never blocks."""
        self._items.append(item)
        self._wake_one()

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(True)
                return

    def _forget(self, fut: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):
            self._getters.remove(fut)

    async def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; raise :class:`TimeoutError` if none arrives in time."""
        items = self._items
        if items:
            return items.popleft()
        if timeout is not None and timeout <= 0:
            raise TimeoutError("the queue is empty")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not items:
            fut: asyncio.Future[bool] = loop.create_future()
            self._getters.append(fut)
            handle = None if deadline is None else loop.call_at(deadline, _wake_getter, fut)
            try:
                woken = await fut
            except BaseException:
                if fut.cancelled() or not fut.done():
                    self._forget(fut)
                elif fut.result() and items:
                    self._wake_one()  # we were handed a wake-up we will not use: pass it on
                raise
            finally:
                if handle is not None:
                    handle.cancel()
            if not woken:  # the deadline passed
                self._forget(fut)
                if items:
                    break
                raise TimeoutError(f"no item arrived within {timeout} s")
        return items.popleft()

    def qsize(self) -> int:
        """Number of queued items."""
        return len(self._items)


# ----------------------------------------------------------------- timeout


if sys.version_info >= (3, 11):

    def _native_timeout(seconds: float) -> Any:
        return asyncio.timeout(seconds)

else:

    def _native_timeout(seconds: float) -> Any:
        return _LegacyTimeout(seconds)


@final
class _LegacyTimeout:
    """``asyncio.timeout`` for Python 3.10: ``loop.call_later`` + ``task.cancel()``.

    On expiry the task is cancelled; the :class:`asyncio.CancelledError` that
    comes out of the block is turned into :class:`TimeoutError`.  Other
    exceptions, and cancellations when the deadline did not pass, propagate
    untouched.  Limitation of 3.10 (no ``Task.uncancel``): a foreign
    cancellation landing after our own expiry is converted too.
    """

    __slots__ = ("_expired", "_handle", "_seconds", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None

    def _expire(self) -> None:
        self._handle = None
        if self._task is not None:
            self._expired = True
            self._task.cancel()

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout() must be used inside a task")
        self._task = task
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self._expire)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        task, self._task = self._task, None
        if self._expired and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:  # 3.11+: keep the task's cancel count right
                uncancel()
            raise TimeoutError(f"timed out after {self._seconds} s") from exc


@final
class _AsyncioTimeout:
    """The scheduler's timeout block: ``asyncio.timeout`` (3.11+) or :class:`_LegacyTimeout` (3.10).

    Only its own expiry becomes :class:`TimeoutError`; an outer cancellation
    passing through is re-raised untouched.  ``None`` means no timeout.
    """

    __slots__ = ("_cm", "_seconds")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._cm: Any = None

    async def __aenter__(self) -> None:
        if self._seconds is not None:
            self._cm = _native_timeout(self._seconds)
            await self._cm.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        cm, self._cm = self._cm, None
        if cm is None:
            return None
        suppress: bool | None = await cm.__aexit__(exc_type, exc, tb)
        return suppress


# -------------------------------------------------------------- task group


@final
class _AsyncioTaskGroup:
    """A set of tasks owned by one ``async with`` block.

    Not :class:`asyncio.TaskGroup`: a failing task is only logged and never
    cancels its siblings.  Leaving the block waits for every task; if the
    block raised (or the waiting is cancelled), the tasks are cancelled first.
    """

    __slots__ = ("_cancelled", "_closed", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled = False
        self._closed = False

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` in the group; an exception escaping it is logged."""
        if self._closed:
            raise RuntimeError("this task group is closed")
        task = asyncio.get_running_loop().create_task(_run_logged(fn, args), name=_task_name(fn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._cancelled:
            task.cancel()

    def cancel(self) -> None:
        """Cancel every task of the group (and those spawned later); leaving the group waits for them."""
        self._cancelled = True
        for task in self._tasks:
            task.cancel()

    async def __aenter__(self) -> _AsyncioTaskGroup:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.cancel()
        interrupted: BaseException | None = None
        try:
            while self._tasks:
                try:
                    await asyncio.wait(list(self._tasks))
                except asyncio.CancelledError as cancel:
                    interrupted = cancel
                    self.cancel()
        finally:
            self._closed = True
        if interrupted is not None and exc_type is None:
            raise interrupted


# --------------------------------------------------------------- scheduler


@final
class AsyncioScheduler:
    """The :class:`~connpool.backends.AsyncScheduler` for asyncio.

    Events and queues are small future-based objects that bind to no loop
    until a task waits on them; ``timeout`` is :func:`asyncio.timeout` (an
    equivalent on 3.10); ``lock()`` is an :class:`asyncio.Lock`; ``spawn``
    keeps a strong reference to its background tasks until they finish.
    """

    __slots__ = ("_background",)

    name: str = "asyncio"
    family: Literal["async"] = "async"

    def __init__(self) -> None:
        self._background: set[asyncio.Task[None]] = set()

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` as a background task of the running loop; an escaping exception is logged."""
        task = asyncio.get_running_loop().create_task(_run_logged(fn, args), name=_task_name(fn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def task_group(self) -> _AsyncioTaskGroup:
        """A scope owning tasks: leaving it waits for them, ``cancel()`` stops them; failures are logged."""
        return _AsyncioTaskGroup()

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep`; ``sleep(0)`` yields to the other tasks."""
        await asyncio.sleep(max(0.0, seconds))

    def event(self) -> AsyncEvent:
        """A new, unset event (binds to a loop only while waited on)."""
        return _AsyncioEvent()

    #: A one-shot wake-up for one task (a future; a timer only for a timeout).
    #: (The class itself, so that a wait costs no factory call.)
    waiter = staticmethod(_AsyncioWaiter)

    def queue(self) -> AsyncQueue[Any]:
        """A new, empty unbounded queue."""
        return _AsyncioQueue()

    def timeout(self, seconds: float | None) -> _AsyncioTimeout:
        """A block that raises :class:`TimeoutError` after ``seconds`` (``None``: never).

        Only this block's own expiry is converted: an outer cancellation or
        timeout passing through is re-raised untouched.
        """
        return _AsyncioTimeout(seconds)

    def lock(self) -> AsyncLock:
        """A new :class:`asyncio.Lock` (binds to a loop on first contended use)."""
        # cast: AsyncLock declares ``__aexit__(*exc_info)``, which no real lock's signature matches.
        return cast(AsyncLock, asyncio.Lock())

    # :func:`time.monotonic` itself (a C function: no Python frame on the hot path).
    monotonic = staticmethod(time.monotonic)

    def running(self) -> bool:
        """Whether an asyncio loop runs in this thread and the calling code is not another library's task."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        try:
            return sniffio.current_async_library() == "asyncio"
        except sniffio.AsyncLibraryNotFoundError:
            return True  # a loop callback outside any task

    def __repr__(self) -> str:
        return "<AsyncioScheduler>"
