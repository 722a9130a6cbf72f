"""``retry``: run a function again when it fails with a transient error.

    from connpool import retry

    @retry                                   # 3 attempts on OSError; pauses of at most 0.1 s, 0.2 s
    def send(data): ...

    @retry(attempts=5, delay=0.5, max_delay=10.0, logger=log)
    async def asend(data): ...

One decorator serves plain and ``async`` functions.  Between attempts it
sleeps with the sleep of the runtime that runs the caller, chosen at each
pause (never at decoration time, which may precede monkey-patching):

* a coroutine function awaits :func:`asyncio.sleep` or :func:`trio.sleep`,
  whichever library :mod:`sniffio` says runs the task;
* a plain function calls :func:`gevent.sleep` or :func:`eventlet.sleep` when
  the process is monkey-patched by that library
  (:func:`connpool.backends.detect_sync_backend`), or when the caller runs in a
  greenlet of that library's hub, or in the main greenlet of a thread where
  that library's hub exists (so a paused retry lets the other greenlets, the
  pool's background work included, run); otherwise :func:`time.sleep`.
  None of gevent, eventlet or greenlet is imported by the check.

Only exceptions that are instances of ``exceptions`` (``OSError`` by default)
are retried.  Everything else propagates at once, unchanged: other errors,
and the exceptions that are not :class:`Exception` at all -- cancellation
(:class:`asyncio.CancelledError`, ``trio.Cancelled``), ``gevent.Timeout``,
``eventlet.Timeout``, :class:`KeyboardInterrupt`, :class:`SystemExit` -- are
never retried, and a cancellation arriving during a pause ends the retrying.
When the last attempt fails, its exception is re-raised as is (same object,
same traceback, no chaining to the earlier failures).

Pauses grow exponentially and are capped: the pause after failed attempt
``n`` is ``min(max_delay, delay * backoff ** (n - 1))``, then jittered.
``jitter=True`` means *equal jitter*: a pause is drawn uniformly from
``[d/2, d]`` for a computed pause ``d``.  It keeps at least half of the
intended back-off, so a small attempt budget still spans the time a server
needs to come back, while clients that failed together spread over the
other half.  ``jitter="full"`` draws from ``[0, d]`` (spreads best, but a
pause may be close to zero); ``jitter=False`` sleeps exactly ``d``.

Note that :class:`connpool.PoolTimeout` is a :class:`TimeoutError`, hence an
``OSError``: with the default ``exceptions`` a pool timeout is retried too.
Pass ``exceptions=`` to narrow what is retried.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar, cast, overload

import sniffio

from .backends import detect_sync_backend

if TYPE_CHECKING:
    import logging

    Logger = logging.Logger | logging.LoggerAdapter[Any]

__all__ = ["RetryDecorator", "retry"]

P = ParamSpec("P")
R = TypeVar("R")

Jitter = bool | Literal["equal", "full"]

_WARNING = 30  # logging.WARNING, without importing logging at run time
_ERROR = 40  # logging.ERROR


class RetryDecorator(Protocol):
    """What ``retry(...)`` with options returns: a decorator that keeps the function's type."""

    def __call__(self, func: Callable[P, R], /) -> Callable[P, R]: ...


# ------------------------------------------------------------------ policy


@dataclass(frozen=True)
class _Policy:
    """The validated options of one decorated function."""

    attempts: int
    exceptions: tuple[type[Exception], ...]
    delay: float
    backoff: float
    max_delay: float
    jitter: Literal["none", "equal", "full"]
    logger: Logger | None
    on_retry: Callable[[int, Exception], object] | None
    sleep: Callable[[float], object] | None

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), jitter included."""
        try:
            computed = self.delay * self.backoff ** (attempt - 1)
        except OverflowError:
            computed = math.inf
        computed = min(computed, self.max_delay)
        if self.jitter == "equal":
            return computed / 2 + random.uniform(0.0, computed / 2)
        if self.jitter == "full":
            return random.uniform(0.0, computed)
        return computed

    def failed(self, name: str, attempt: int, error: Exception) -> float:
        """Log a failed attempt that will be retried; return the pause before the next one."""
        pause = self.pause(attempt)
        if self.logger is not None:
            self.logger.log(
                _WARNING,
                "retry: %s failed (attempt %d/%d): %s: %s; retrying in %.3fs",
                name,
                attempt,
                self.attempts,
                type(error).__qualname__,
                error,
                pause,
            )
        return pause

    def give_up(self, name: str, attempt: int, error: Exception) -> None:
        """Log the failure of the last attempt (the caller then re-raises it)."""
        if self.logger is not None:
            self.logger.log(
                _ERROR,
                "retry: %s failed (attempt %d/%d): %s: %s; giving up",
                name,
                attempt,
                self.attempts,
                type(error).__qualname__,
                error,
            )


def _number(name: str, value: object, minimum: float) -> float:
    """``value`` as a float if it is a finite real number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"retry(): {name} must be a number >= {minimum:g}, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"retry(): {name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def _exception_classes(exceptions: object) -> tuple[type[Exception], ...]:
    classes = exceptions if isinstance(exceptions, tuple) else (exceptions,)
    if not classes:
        raise ValueError("retry(): exceptions must name at least one exception class, got ()")
    for cls in classes:
        if not isinstance(cls, type) or not issubclass(cls, BaseException):
            raise TypeError(
                f"retry(): exceptions must be an exception class or a tuple of them, got {exceptions!r}"
            )
        if not issubclass(cls, Exception):
            raise TypeError(
                f"retry(): exceptions must be Exception subclasses, got {cls.__qualname__}: "
                "cancellation, timeouts and interrupts (BaseException) always propagate, never retried"
            )
    return cast("tuple[type[Exception], ...]", classes)


def _policy(
    *,
    attempts: object,
    exceptions: object,
    delay: object,
    backoff: object,
    max_delay: object,
    jitter: object,
    logger: object,
    on_retry: object,
    sleep: object,
) -> _Policy:
    """Validate the options (at decoration time) and freeze them."""
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise TypeError(f"retry(): attempts must be an int >= 1, got {attempts!r}")
    if attempts < 1:
        raise ValueError(f"retry(): attempts must be an int >= 1, got {attempts!r}")
    if jitter is True or jitter == "equal":
        mode: Literal["none", "equal", "full"] = "equal"
    elif jitter is False:
        mode = "none"
    elif jitter == "full":
        mode = "full"
    else:
        raise ValueError(f"retry(): jitter must be True, False, 'equal' or 'full', got {jitter!r}")
    if logger is not None and not callable(getattr(logger, "log", None)):
        raise TypeError(f"retry(): logger must be a logging.Logger (or adapter) or None, got {logger!r}")
    if on_retry is not None and not callable(on_retry):
        raise TypeError(
            f"retry(): on_retry must be a callable on_retry(attempt, error) or None, got {on_retry!r}"
        )
    if sleep is not None and not callable(sleep):
        raise TypeError(f"retry(): sleep must be a callable sleep(seconds) or None, got {sleep!r}")
    return _Policy(
        attempts=attempts,
        exceptions=_exception_classes(exceptions),
        delay=_number("delay", delay, 0),
        backoff=_number("backoff", backoff, 1),
        max_delay=_number("max_delay", max_delay, 0),
        jitter=mode,
        logger=cast("Logger | None", logger),
        on_retry=cast("Callable[[int, Exception], object] | None", on_retry),
        sleep=cast("Callable[[float], object] | None", sleep),
    )


# ------------------------------------------------------------------ sleeps


def _gevent_hub() -> object | None:
    """This thread's gevent hub if gevent is imported and a hub exists (none is created)."""
    hub_local = sys.modules.get("gevent._hub_local")
    get_hub_if_exists = getattr(hub_local, "get_hub_if_exists", None)
    return get_hub_if_exists() if get_hub_if_exists is not None else None


def _eventlet_hub() -> object | None:
    """The greenlet of this thread's eventlet hub if one exists (none is created)."""
    hubs = sys.modules.get("eventlet.hubs")
    hub = getattr(getattr(hubs, "_threadlocal", None), "hub", None)
    return getattr(hub, "greenlet", None)


def sync_runtime() -> Literal["threading", "gevent", "eventlet"]:
    """The runtime whose sleep a paused retry of a plain function uses (see the module docs)."""
    patched = detect_sync_backend()
    if patched != "threading":
        return cast("Literal['gevent', 'eventlet']", patched)
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return "threading"
    gevent_hub = _gevent_hub()
    eventlet_hub = _eventlet_hub()
    if gevent_hub is None and eventlet_hub is None:
        return "threading"
    current = greenlet.getcurrent()
    if current is gevent_hub or current is eventlet_hub:
        return "threading"  # inside a hub itself: it must not switch away
    ancestor = current.parent
    while ancestor is not None:
        if ancestor is gevent_hub:
            return "gevent"
        if ancestor is eventlet_hub:
            return "eventlet"
        ancestor = ancestor.parent
    # The main greenlet (or a bare greenlet): the hub of this thread runs the other greenlets.
    return "gevent" if gevent_hub is not None else "eventlet"


def _sync_sleep() -> Callable[[float], object]:
    runtime = sync_runtime()
    if runtime == "threading":
        return time.sleep
    # The library is imported already: its hub exists or it monkey-patched the process.
    sleep: Callable[[float], object] = sys.modules[runtime].sleep
    return sleep


def _async_sleep() -> Callable[[float], Awaitable[object]]:
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError(
            "retry: cannot tell which async library runs this coroutine; run it under asyncio or "
            "trio, or pass sleep= to retry()"
        ) from None
    if library == "asyncio":
        import asyncio

        return asyncio.sleep
    if library == "trio":
        import trio

        return trio.sleep
    raise RuntimeError(f"retry: unsupported async library {library!r}; pass sleep= to retry()")


# ---------------------------------------------------------------- wrappers


def _is_async(func: object) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    # An object whose __call__ is a coroutine function.
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(type(func).__call__)


def _decorate(func: Callable[P, R], policy: _Policy) -> Callable[P, R]:
    if not callable(func):
        raise TypeError(
            f"retry() takes the function to decorate or keyword options, got {func!r} "
            "(did you mean retry(attempts=...)?)"
        )
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"retry() cannot decorate the generator function {func.__qualname__}: calling it does not "
            "run its body, so there is nothing to retry"
        )
    name = getattr(func, "__qualname__", None) or repr(func)

    if _is_async(func):
        afunc = cast("Callable[P, Awaitable[Any]]", func)

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            attempt = 1
            while True:
                try:
                    return await afunc(*args, **kwargs)
                except policy.exceptions as error:
                    if attempt >= policy.attempts:
                        policy.give_up(name, attempt, error)
                        raise
                    pause = policy.failed(name, attempt, error)
                    if policy.on_retry is not None:
                        hooked = policy.on_retry(attempt, error)
                        if inspect.isawaitable(hooked):
                            await hooked
                # Outside the except block: the next failure is not chained to this one.
                if policy.sleep is None:
                    await _async_sleep()(pause)
                else:
                    slept = policy.sleep(pause)
                    if inspect.isawaitable(slept):
                        await slept
                attempt += 1

        return cast("Callable[P, R]", async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 1
        while True:
            try:
                return func(*args, **kwargs)
            except policy.exceptions as error:
                if attempt >= policy.attempts:
                    policy.give_up(name, attempt, error)
                    raise
                pause = policy.failed(name, attempt, error)
                if policy.on_retry is not None:
                    policy.on_retry(attempt, error)
            (policy.sleep or _sync_sleep())(pause)
            attempt += 1

    return wrapper


@overload
def retry(
    func: Callable[P, R],
    /,
    *,
    attempts: int = ...,
    exceptions: type[Exception] | tuple[type[Exception], ...] = ...,
    delay: float = ...,
    backoff: float = ...,
    max_delay: float = ...,
    jitter: Jitter = ...,
    logger: Logger | None = ...,
    on_retry: Callable[[int, Exception], object] | None = ...,
    sleep: Callable[[float], object] | None = ...,
) -> Callable[P, R]: ...
@overload
def retry(
    func: None = None,
    /,
    *,
    attempts: int = ...,
    exceptions: type[Exception] | tuple[type[Exception], ...] = ...,
    delay: float = ...,
    backoff: float = ...,
    max_delay: float = ...,
    jitter: Jitter = ...,
    logger: Logger | None = ...,
    on_retry: Callable[[int, Exception], object] | None = ...,
    sleep: Callable[[float], object] | None = ...,
) -> RetryDecorator: ...


def retry(
    func: Callable[P, R] | None = None,
    /,
    *,
    attempts: int = 3,
    exceptions: type[Exception] | tuple[type[Exception], ...] = (OSError,),
    delay: float = 0.1,
    backoff: float = 2.0,
    max_delay: float = 5.0,
    jitter: Jitter = True,
    logger: Logger | None = None,
    on_retry: Callable[[int, Exception], object] | None = None,
    sleep: Callable[[float], object] | None = None,
) -> Callable[P, R] | RetryDecorator:
    """Call the decorated function again when it raises one of ``exceptions``.

    Use it bare (``@retry``) or with options (``@retry(attempts=5)``); it
    decorates plain functions and coroutine functions alike, keeps their name,
    docstring, signature and static type, and works on methods.  Options are
    validated when decorating: a wrong type raises :class:`TypeError`, a value
    out of range :class:`ValueError`, both naming the parameter.

    :param attempts: how many times the function runs at most (``1``: no retry).
    :param exceptions: the exception class, or tuple of classes, that trigger a
        retry; all must be :class:`Exception` subclasses.  Anything else -- in
        particular cancellation, ``gevent.Timeout``, ``eventlet.Timeout`` and
        :class:`KeyboardInterrupt` -- propagates at once.
    :param delay: seconds to wait after the first failure (``>= 0``).
    :param backoff: factor applied to the pause after each further failure (``>= 1``).
    :param max_delay: cap on any single pause, before jitter (``>= 0``).
    :param jitter: ``True`` or ``"equal"`` (default): a pause ``d`` becomes a
        random value in ``[d/2, d]``; ``"full"``: in ``[0, d]``; ``False``: ``d``.
    :param logger: if given, each failure that will be retried is logged at
        WARNING (function, ``attempt n/N``, error, next pause) and the final
        one at ERROR before it is re-raised.
    :param on_retry: ``on_retry(attempt, error)``, called after each failure
        that will be retried, before the pause (``attempt`` is the number of
        the failed attempt, from 1).  On a coroutine function it may be a
        coroutine function.  An exception it raises propagates.
    :param sleep: replaces the runtime's sleep (tests, custom schedulers):
        ``sleep(seconds)``; on a coroutine function it may return an awaitable,
        which is awaited.
    :returns: the decorated function, or (without ``func``) a decorator.
    :raises: the last attempt's exception, unchanged, once ``attempts`` ran out.
    """
    policy = _policy(
        attempts=attempts,
        exceptions=exceptions,
        delay=delay,
        backoff=backoff,
        max_delay=max_delay,
        jitter=jitter,
        logger=logger,
        on_retry=on_retry,
        sleep=sleep,
    )
    if func is None:

        def decorator(function: Callable[P, R], /) -> Callable[P, R]:
            return _decorate(function, policy)

        return cast("RetryDecorator", decorator)
    return _decorate(func, policy)
