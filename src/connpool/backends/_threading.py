"""The threading scheduler: OS threads and the standard library's primitives.

This is the scheduler ``Pool(backend="auto")`` picks when neither gevent nor
eventlet has monkey-patched the process.  Its :meth:`ThreadingScheduler.timeout`
is *soft*: threads cannot be interrupted, so the deadline is checked when the
block ends.
"""

from __future__ import annotations

import functools
import logging
import queue as _queue
import threading
import time
import types
from collections.abc import Callable
from typing import Any, Literal, cast, final

from ._base import SyncEvent, SyncLock, SyncQueue, TaskHandle

__all__ = ["NoOpLock", "ThreadingScheduler"]

logger = logging.getLogger("connpool")


def _task_name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _run_logged(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    """Run ``fn(*args)`` in a thread; log what escapes it instead of printing it."""
    try:
        fn(*args)
    except SystemExit:
        raise  # ends the thread quietly, as threading does
    except BaseException:
        logger.exception("connpool: unhandled error in background task %s", _task_name(fn))


@final
class NoOpLock:
    """A lock that does nothing: green schedulers' ``lock()``.

    On gevent and eventlet a critical section that never switches cannot be
    interleaved with another one, so it needs no lock.  Stateless: one shared
    instance serves every caller.
    """

    __slots__ = ()

    # C callables, not methods: the release of every connection takes this lock, and on a
    # green or async runtime it should cost no Python frame.
    acquire: Callable[[], bool] = staticmethod(functools.partial(bool, True))  # always at once
    release: Callable[[], None] = staticmethod(types.NoneType)  # nothing to give back

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc_info: object) -> None:
        return None


#: The one no-op lock green schedulers hand out.
NOOP_LOCK = NoOpLock()


@final
class _ThreadWaiter:
    """A one-shot wake-up for one thread: a lock taken at birth, released by ``set()``.

    The waiting thread blocks acquiring it again (``threading.Condition``
    parks its waiters the same way), so a wait with a timeout costs no timer.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """Wake the waiting thread (or let its coming ``wait`` return at once)."""
        try:  # noqa: SIM105 (contextlib.suppress costs a context manager on every hand-off)
            self._lock.release()
        except RuntimeError:  # set before, and not consumed by a wait since
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (``True``) or until ``timeout`` seconds pass (``False``)."""
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(True, max(0.0, timeout))


@final
class _ThreadHandle:
    """A :class:`TaskHandle` for a daemon thread."""

    __slots__ = ("_thread",)

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the thread ended; ``True`` if it did within ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def done(self) -> bool:
        """Whether the thread ended."""
        return not self._thread.is_alive()

    def __repr__(self) -> str:
        return f"<_ThreadHandle {self._thread.name} done={self.done()}>"


@final
class _ThreadQueue:
    """An unbounded FIFO queue on :class:`queue.SimpleQueue`; ``get`` times out with :class:`TimeoutError`."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: _queue.SimpleQueue[Any] = _queue.SimpleQueue()

    def put(self, item: Any) -> None:
        """Append ``item``; never blocks."""
        self._queue.put(item)

    def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; raise :class:`TimeoutError` if none arrives in time."""
        try:
            if timeout is not None and timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except _queue.Empty:
            raise TimeoutError(f"no item arrived within {timeout} s") from None

    def qsize(self) -> int:
        """Number of queued items."""
        return self._queue.qsize()


@final
class _SoftTimeout:
    """A deadline checked when the block ends (threads cannot be interrupted).

    If the block finished normally but later than ``seconds`` after it
    started, :class:`TimeoutError` is raised on exit.  An exception leaving
    the block is never replaced.
    """

    __slots__ = ("_deadline", "_seconds")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._deadline: float | None = None

    def __enter__(self) -> None:
        if self._seconds is not None:
            self._deadline = time.monotonic() + self._seconds

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        deadline = self._deadline
        self._deadline = None
        if exc_type is None and deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"block took longer than {self._seconds} s")


@final
class ThreadingScheduler:
    """The :class:`~connpool.backends.SyncScheduler` for OS threads.

    ``spawn`` starts a daemon thread, events are :class:`threading.Event`,
    queues wrap :class:`queue.SimpleQueue`, ``lock()`` is a
    :class:`threading.Lock`.  ``timeout()`` is soft: see :meth:`timeout`.
    """

    __slots__ = ()

    name: str = "threading"
    family: Literal["sync"] = "sync"

    def spawn(self, fn: Callable[..., object], *args: Any) -> TaskHandle:
        """Run ``fn(*args)`` in a new daemon thread; an escaping exception is logged to ``connpool``."""
        thread = threading.Thread(
            target=_run_logged, args=(fn, args), name=f"connpool:{_task_name(fn)}", daemon=True
        )
        thread.start()
        return _ThreadHandle(thread)

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` (``0`` releases the GIL)."""
        time.sleep(max(0.0, seconds))

    def event(self) -> SyncEvent:
        """A new, unset :class:`threading.Event`."""
        return threading.Event()

    #: A one-shot wake-up for one thread (a lock it blocks on until ``set()``).
    #: (The class itself, so that a wait costs no factory call.)
    waiter = staticmethod(_ThreadWaiter)

    def queue(self) -> SyncQueue[Any]:
        """A new, empty unbounded queue."""
        return _ThreadQueue()

    def timeout(self, seconds: float | None) -> _SoftTimeout:
        """A *soft* timeout: raise :class:`TimeoutError` when the block ends after ``seconds``.

        A thread cannot be interrupted, so the block always runs to its end;
        the deadline is checked on exit.  Blocking calls inside it should
        carry their own timeouts.  ``None`` means no timeout.
        """
        return _SoftTimeout(seconds)

    def lock(self) -> SyncLock:
        """A new :class:`threading.Lock`."""
        # cast: SyncLock declares ``__exit__(*exc_info)``, which no real lock's signature matches.
        return cast(SyncLock, threading.Lock())

    # :func:`time.monotonic` itself (a C function: no Python frame on the hot path).
    monotonic = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "<ThreadingScheduler>"
