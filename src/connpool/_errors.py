"""connpool's exceptions."""

from __future__ import annotations

__all__ = ["PoolClosed", "PoolError", "PoolTimeout", "TooManyWaiters"]


class PoolError(Exception):
    """Base class of the errors raised by a pool."""


class PoolTimeout(PoolError, TimeoutError):
    """No connection could be had in time.

    The message says whether all connections were busy or the pool could not
    connect; in the latter case the last connect error is the ``__cause__``.
    """


class PoolClosed(PoolError):
    """The pool is closed (or was closed while the caller waited)."""


class TooManyWaiters(PoolError):
    """``max_waiting`` callers already wait: the request is refused at once."""
