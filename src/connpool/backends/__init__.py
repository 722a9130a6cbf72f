"""Schedulers: connpool's public, unified concurrency layer.

>>> from connpool.backends import get_backend, available_backends
>>> get_backend("threading").name
'threading'

``get_backend(name)`` returns the scheduler of one runtime: ``"threading"``,
``"gevent"`` and ``"eventlet"`` are :class:`SyncScheduler` objects,
``"asyncio"`` and ``"trio"`` are :class:`AsyncScheduler` objects.  Each
runtime's module is imported only when its scheduler is first asked for, so
importing connpool imports none of gevent, eventlet, trio or anyio.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Literal, overload

from ._base import (
    AsyncEvent,
    AsyncLock,
    AsyncQueue,
    AsyncScheduler,
    AsyncWaiter,
    SyncEvent,
    SyncLock,
    SyncQueue,
    SyncScheduler,
    SyncWaiter,
    TaskGroup,
    TaskHandle,
)

__all__ = [
    "ASYNC_BACKENDS",
    "SYNC_BACKENDS",
    "AsyncEvent",
    "AsyncLock",
    "AsyncQueue",
    "AsyncScheduler",
    "AsyncWaiter",
    "SyncEvent",
    "SyncLock",
    "SyncQueue",
    "SyncScheduler",
    "SyncWaiter",
    "TaskGroup",
    "TaskHandle",
    "BackendUnavailable",
    "available_backends",
    "detect_async_backend",
    "detect_sync_backend",
    "get_backend",
]

#: name -> (module, class, the distribution it needs, the extra that installs it)
_TABLE: dict[str, tuple[str, str, str | None, str | None]] = {
    "threading": ("connpool.backends._threading", "ThreadingScheduler", None, None),
    "gevent": ("connpool.backends._gevent", "GeventScheduler", "gevent", "gevent"),
    "eventlet": ("connpool.backends._eventlet", "EventletScheduler", "eventlet", "eventlet"),
    "asyncio": ("connpool.backends._asyncio", "AsyncioScheduler", None, None),
    "trio": ("connpool.backends._trio", "TrioScheduler", "trio", "trio"),
}

SYNC_BACKENDS: tuple[str, ...] = ("threading", "gevent", "eventlet")
ASYNC_BACKENDS: tuple[str, ...] = ("asyncio", "trio")


class BackendUnavailable(ImportError, LookupError):
    """A backend whose runtime library is not installed; the message names the extra to install."""


_instances: dict[str, SyncScheduler | AsyncScheduler] = {}


@overload
def get_backend(name: Literal["threading", "gevent", "eventlet"]) -> SyncScheduler: ...
@overload
def get_backend(name: Literal["asyncio", "trio"]) -> AsyncScheduler: ...
@overload
def get_backend(name: str) -> SyncScheduler | AsyncScheduler: ...


def get_backend(name: str) -> SyncScheduler | AsyncScheduler:
    """Return the scheduler of the runtime called ``name``.

    Raises :class:`LookupError` for an unknown name and
    :class:`BackendUnavailable` (an ``ImportError`` and a ``LookupError``)
    naming the extra to install when the runtime's library is missing.
    """
    try:
        return _instances[name]
    except (KeyError, TypeError):
        pass
    if not isinstance(name, str) or name not in _TABLE:
        raise LookupError(
            f"unknown backend {name!r}: choose one of {', '.join(map(repr, _TABLE))} "
            "(or 'auto', or pass a scheduler object)"
        )
    module_name, class_name, dist, extra = _TABLE[name]
    if dist is not None and not _installed(dist):
        raise BackendUnavailable(
            f"backend {name!r} needs the {dist} library, which is not installed: "
            f'pip install "connpool[{extra}]"'
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise BackendUnavailable(
            f"backend {name!r} could not be loaded ({exc!r}); is {dist or 'it'} installed and "
            "compatible with this process (e.g. not monkey-patched by another runtime)?"
        ) from exc
    scheduler: SyncScheduler | AsyncScheduler = getattr(module, class_name)()
    _instances[name] = scheduler
    return scheduler


def _installed(dist: str) -> bool:
    if sys.modules.get(dist, False) is None:  # blocked on purpose
        return False
    try:
        return importlib.util.find_spec(dist) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Names of the backends whose runtime library is installed (nothing is imported)."""
    return [name for name, (_, _, dist, _) in _TABLE.items() if dist is None or _installed(dist)]


def detect_sync_backend() -> str:
    """The sync runtime in charge of this process: what ``Pool(backend="auto")`` picks.

    eventlet if eventlet has monkey-patched the socket module, else gevent if
    gevent has, else threading.  Neither library is imported by the check.
    """
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("socket"):
        return "eventlet"
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return "gevent"
    return "threading"


def detect_async_backend() -> str:
    """The async library running the calling task: what ``AsyncPool(backend="auto")`` picks.

    Raises :class:`RuntimeError` outside of a running asyncio or trio loop.
    """
    import sniffio

    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError(
            "AsyncPool(backend='auto') must be opened inside a running asyncio or trio loop"
        ) from None
    if library not in ASYNC_BACKENDS:
        raise RuntimeError(f"unsupported async library {library!r}: connpool runs on asyncio and trio")
    return library
