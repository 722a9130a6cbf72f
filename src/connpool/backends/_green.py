"""Queue and timeout wrappers shared by the green schedulers (gevent, eventlet).

Each runtime supplies its own native objects -- its queue class and ``Empty``
exception, a function that starts its ``Timeout`` and one that stops it -- so
that nothing here imports gevent or eventlet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

__all__ = ["GreenQueue", "GreenTimeout"]


@final
class GreenQueue:
    """An unbounded FIFO queue over a runtime's native queue.

    ``put`` appends and schedules the hand-off to a getter on the hub: it
    never switches.
    """

    __slots__ = ("_empty", "_queue")

    def __init__(self, queue: Any, empty: type[BaseException]) -> None:
        self._queue = queue
        self._empty = empty

    def put(self, item: Any) -> None:
        """Append ``item``; never blocks and never switches."""
        self._queue.put(item)

    def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; raise :class:`TimeoutError` if none arrives in time."""
        try:
            if timeout is not None and timeout <= 0:
                return self._queue.get(block=False)
            return self._queue.get(timeout=timeout)
        except self._empty:
            raise TimeoutError(f"no item arrived within {timeout} s") from None

    def qsize(self) -> int:
        """Number of queued items."""
        return int(self._queue.qsize())


@final
class GreenTimeout:
    """A runtime ``Timeout`` whose own expiry, and only that, becomes :class:`TimeoutError`."""

    __slots__ = ("_seconds", "_start", "_stop", "_timer")

    def __init__(
        self, seconds: float | None, start: Callable[[float], Any], stop: Callable[[Any], object]
    ) -> None:
        self._seconds = seconds
        self._start = start
        self._stop = stop
        self._timer: Any = None

    def __enter__(self) -> None:
        if self._seconds is not None:
            self._timer = self._start(max(0.0, self._seconds))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        timer = self._timer
        if timer is None:
            return
        self._timer = None
        self._stop(timer)
        if exc is timer:
            raise TimeoutError(f"timed out after {self._seconds} s") from None
