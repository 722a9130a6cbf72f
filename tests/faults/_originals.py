"""The real operating-system primitives, whatever runtime the test process uses.

The fault servers run in OS threads of their own, with blocking-free raw
sockets and ``poll``, so they behave the same under every runtime under test.
When gevent or eventlet has monkey-patched the process, ``threading``,
``_thread``, ``select`` and ``socket`` hand out green objects; the originals
are fetched here instead:

* threads and locks: the original ``_thread.start_new_thread`` and
  ``_thread.allocate_lock`` (``gevent.monkey.get_original`` /
  ``eventlet.patcher.original``);
* readiness: the original ``select.poll``;
* sockets: ``_socket.socket``, the C type, which neither library patches.

Code running in those threads must touch nothing patched: no ``threading``,
no ``logging`` (its locks are green), no ``queue``.
"""

from __future__ import annotations

import _socket
import contextlib
import importlib
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "RawSocket",
    "allocate_lock",
    "bind_listener",
    "original",
    "poll",
    "reset_close",
    "runtime_sleep",
    "start_thread",
]

RawSocket = _socket.socket

_LINGER_ZERO = struct.pack("ii", 1, 0)


def original(module: str, name: str) -> Any:
    """``module.name`` as it was before any monkey-patching."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and getattr(patcher, "already_patched", None):
        return getattr(patcher.original(module), name)
    # getattr: another thread may be importing gevent.monkey right now (connpool.net's first
    # gevent connect does), and a partially initialized module lacks get_original.
    get_original = getattr(sys.modules.get("gevent.monkey"), "get_original", None)
    if get_original is not None:
        return get_original(module, name)  # the current attribute when not patched
    return getattr(importlib.import_module(module), name)


def start_thread(fn: Callable[[], object]) -> None:
    """Run ``fn()`` in a new OS thread (never a greenlet)."""
    original("_thread", "start_new_thread")(fn, ())


def allocate_lock() -> Any:
    """A real lock (``acquire(timeout=...)`` blocks the OS thread, never switches)."""
    return original("_thread", "allocate_lock")()


def poll() -> Any:
    """A real ``select.poll`` object."""
    return original("select", "poll")()


def reset_close(sock: RawSocket) -> None:
    """Close ``sock`` so that the peer gets a RST (SO_LINGER on, timeout 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


def fin_close(sock: RawSocket) -> None:
    """Close ``sock`` with a FIN: shut down writing, drop unread input (which would turn it into a RST)."""
    with contextlib.suppress(OSError):
        sock.shutdown(_socket.SHUT_WR)
    try:
        sock.setblocking(False)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()


def bind_listener(host: str, port: int) -> RawSocket:
    """A TCP socket bound to ``(host, port)`` by explicit port number, not yet listening.

    With ``port=0`` a free port is found first and then bound explicitly: a
    socket bound to an explicit port keeps it while it is not listening
    (after ``shutdown(SHUT_RD)``), which is how the servers stop accepting
    and later listen again on the same port (Linux).
    """
    attempts = 50 if port == 0 else 1
    for _ in range(attempts):
        chosen = port
        if port == 0:
            probe = RawSocket(_socket.AF_INET, _socket.SOCK_STREAM)
            try:
                probe.bind((host, 0))
                chosen = probe.getsockname()[1]
            finally:
                probe.close()
        sock = RawSocket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, chosen))
        except OSError:
            sock.close()
            if port != 0:
                raise
            continue
        return sock
    raise OSError(f"no free port found on {host}")


def runtime_sleep() -> Callable[[float], object]:
    """The calling thread's sleep: gevent's or eventlet's when their hub runs here, else ``time.sleep``."""
    hub_local = sys.modules.get("gevent._hub_local")
    if hub_local is not None and hub_local.get_hub_if_exists() is not None:
        return sys.modules["gevent"].sleep  # type: ignore[no-any-return]
    hubs = sys.modules.get("eventlet.hubs")
    if hubs is not None and getattr(getattr(hubs, "_threadlocal", None), "hub", None) is not None:
        return sys.modules["eventlet"].sleep  # type: ignore[no-any-return]
    return time.sleep


def wait_until(
    predicate: Callable[[], bool], timeout: float, sleep: Callable[[float], object] | None
) -> bool:
    """Poll ``predicate`` every millisecond with ``sleep``; whether it held within ``timeout``."""
    sleep = sleep or runtime_sleep()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        sleep(0.001)
    return True


async def wait_until_async(
    predicate: Callable[[], bool], timeout: float, sleep: Callable[[float], Any] | None
) -> bool:
    """The async twin of :func:`wait_until` (``anyio.sleep`` by default)."""
    if sleep is None:
        import anyio

        sleep = anyio.sleep
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await sleep(0.001)
    return True
