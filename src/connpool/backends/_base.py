"""The scheduler contract: the small set of primitives connpool needs from a runtime.

There are two families.  A :class:`SyncScheduler` serves blocking code
(threading, gevent, eventlet); an :class:`AsyncScheduler` serves ``async``
code (asyncio, trio).  Both offer the same verbs -- ``spawn``, ``sleep``,
``event``, ``queue``, ``timeout``, ``lock``, ``monotonic`` -- with the same
meaning, so code written against one scheduler runs on every runtime of its
family.  A user may pass any object that satisfies the protocol as
``backend=`` to :class:`connpool.Pool` or :class:`connpool.AsyncPool`.

Rules every implementation keeps:

* ``event().wait(timeout)`` returns ``True`` if the event was set and
  ``False`` if the timeout expired first; it never raises on timeout.
* ``queue()`` is unbounded: ``put`` never blocks and never switches.
  ``get(timeout)`` raises the builtin :class:`TimeoutError` when nothing
  arrived in time.
* ``timeout(seconds)`` is a context manager that raises the builtin
  :class:`TimeoutError` when its block overruns.  Green and async runtimes
  interrupt the block at its next switch point.  Threads cannot be
  interrupted, so the threading scheduler checks the deadline when the block
  ends (a *soft* timeout); blocking calls inside it should carry their own
  timeouts.  Only the scheduler's own timeout is converted: an unrelated
  ``gevent.Timeout`` or cancellation passing through is re-raised untouched.
* ``lock()`` protects short critical sections that never switch.  On green
  runtimes and on asyncio/trio such sections cannot be interleaved, so the
  lock may be a no-op.
* ``monotonic()`` is the clock every time rule of the pool reads; tests may
  substitute a scheduler whose clock is fake.
* ``waiter()`` (optional) returns a one-shot wake-up for exactly one blocked
  caller: ``set()`` may come before, during or after ``wait(timeout)``, from
  any thread or task of the runtime, any number of times; ``wait`` returns
  ``True`` once set and ``False`` on timeout, and is called at most once.
  It is what the pool's waiting callers block on: much cheaper than an event,
  which must support many waiters and ``clear()``.  Without it the pool uses
  ``event()``.  An async waiter's ``wait`` may return any awaitable (trio's
  returns ``wait_task_rescheduled`` itself, with no coroutine of its own).
* ``clock()`` (optional, async schedulers) returns a function that reads what
  ``monotonic()`` reads, bound to the running loop's clock; the pool looks it
  up on the scheduler's class when it opens and uses it for every reading.
* Nothing binds to an event loop or hub until it is used: creating a
  scheduler, an event or a queue outside a running loop is allowed, and the
  object attaches to the loop that first waits on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

__all__ = [
    "AsyncEvent",
    "AsyncLock",
    "AsyncQueue",
    "AsyncScheduler",
    "SyncEvent",
    "SyncLock",
    "SyncQueue",
    "SyncScheduler",
    "SyncWaiter",
    "AsyncWaiter",
    "TaskGroup",
    "TaskHandle",
]

T = TypeVar("T")


# --------------------------------------------------------------------- sync


@runtime_checkable
class SyncEvent(Protocol):
    """A flag that blocked callers wait on."""

    def set(self) -> None:
        """Set the flag and wake every waiter; never blocks or switches."""

    def clear(self) -> None:
        """Reset the flag."""

    def is_set(self) -> bool:
        """Whether the flag is set."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (``True``) or until ``timeout`` seconds pass (``False``)."""


@runtime_checkable
class SyncWaiter(Protocol):
    """A one-shot wake-up for one blocked caller (see ``SyncScheduler.waiter``)."""

    def set(self) -> None:
        """Wake the caller (now, or at once when it waits later); never blocks or switches."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (``True``) or until ``timeout`` seconds pass (``False``); call once."""


@runtime_checkable
class SyncQueue(Protocol[T]):
    """An unbounded FIFO queue."""

    def put(self, item: T) -> None:
        """Append ``item``; never blocks and never switches."""

    def get(self, timeout: float | None = None) -> T:
        """Remove and return the oldest item; raise :class:`TimeoutError` if none arrives in time."""

    def qsize(self) -> int:
        """Number of queued items."""


@runtime_checkable
class SyncLock(Protocol):
    """A mutual-exclusion lock usable as a context manager."""

    def acquire(self) -> bool:
        """Take the lock, blocking until it is free."""

    def release(self) -> None:
        """Give the lock back."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: object) -> Any: ...


@runtime_checkable
class TaskHandle(Protocol):
    """A spawned thread or greenlet."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait until it finished; ``True`` if it did within ``timeout``."""

    def done(self) -> bool:
        """Whether it finished."""


@runtime_checkable
class SyncScheduler(Protocol):
    """Primitives for a blocking runtime (threading, gevent, eventlet)."""

    name: str
    family: Literal["sync"]

    def spawn(self, fn: Callable[..., object], *args: Any) -> TaskHandle:
        """Run ``fn(*args)`` concurrently (a daemon thread or a greenlet).

        An exception escaping ``fn`` is logged, never propagated.
        """

    def sleep(self, seconds: float) -> None:
        """Suspend the caller; ``sleep(0)`` yields to other green threads."""

    def event(self) -> SyncEvent:
        """A new, unset event."""

    def queue(self) -> SyncQueue[Any]:
        """A new, empty unbounded queue."""

    def timeout(self, seconds: float | None) -> AbstractContextManager[None]:
        """A block that raises :class:`TimeoutError` after ``seconds`` (``None``: never)."""

    def lock(self) -> SyncLock:
        """A new lock (a no-op lock on green runtimes)."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""


# -------------------------------------------------------------------- async


@runtime_checkable
class AsyncEvent(Protocol):
    """A flag that tasks wait on."""

    def set(self) -> None:
        """Set the flag and wake every waiter; a plain call, safe anywhere."""

    def clear(self) -> None:
        """Reset the flag."""

    def is_set(self) -> bool:
        """Whether the flag is set."""

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set (``True``) or until ``timeout`` seconds pass (``False``).

        Cancellation of the waiting task propagates unchanged.
        """


@runtime_checkable
class AsyncWaiter(Protocol):
    """A one-shot wake-up for one waiting task (see ``AsyncScheduler.waiter``)."""

    def set(self) -> None:
        """Wake the task (now, or at once when it waits later); a plain call."""

    def wait(self, timeout: float | None = None) -> Awaitable[bool]:
        """Wait until set (``True``) or until ``timeout`` seconds pass (``False``); call once.

        Cancellation of the waiting task propagates unchanged.
        """


@runtime_checkable
class AsyncQueue(Protocol[T]):
    """An unbounded FIFO queue for tasks."""

    def put(self, item: T) -> None:
        """Append ``item``; a plain call that never blocks."""

    async def get(self, timeout: float | None = None) -> T:
        """Remove and return the oldest item; raise :class:`TimeoutError` if none arrives in time."""

    def qsize(self) -> int:
        """Number of queued items."""


@runtime_checkable
class AsyncLock(Protocol):
    """A lock usable with ``async with``."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: object) -> Any: ...


@runtime_checkable
class TaskGroup(Protocol):
    """Tasks owned by one scope (a trio nursery, a set of asyncio tasks)."""

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` in the group; an exception escaping it is logged."""

    def cancel(self) -> None:
        """Cancel every task of the group; leaving the group then waits for them."""


@runtime_checkable
class AsyncScheduler(Protocol):
    """Primitives for an async runtime (asyncio, trio)."""

    name: str
    family: Literal["async"]

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``fn(*args)`` as a background task not tied to the caller's scope."""

    def task_group(self) -> AbstractAsyncContextManager[TaskGroup]:
        """A scope owning tasks; leaving it waits for them (cancel first to stop them)."""

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task; ``sleep(0)`` is a checkpoint."""

    def event(self) -> AsyncEvent:
        """A new, unset event (binds to a loop only when waited on)."""

    def queue(self) -> AsyncQueue[Any]:
        """A new, empty unbounded queue."""

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[None]:
        """A block that raises :class:`TimeoutError` after ``seconds`` (``None``: never)."""

    def lock(self) -> AsyncLock:
        """A new lock."""

    def monotonic(self) -> float:
        """Seconds on the runtime's clock (trio's clock, so ``MockClock`` applies)."""

    def running(self) -> bool:
        """Whether the calling code runs inside this runtime's event loop."""
