"""The blocking runtimes behind the sync API: threading, gevent and eventlet.

Each runtime object hands out that runtime's own sockets, TLS sockets,
resolver, deadline, tasks and semaphore.  gevent uses ``gevent.socket``,
``gevent.ssl`` and ``gevent.Timeout``; eventlet uses ``eventlet.green.socket``,
``eventlet.green.ssl`` and ``eventlet.Timeout``.  Neither ever blocks its hub,
whether or not the process is monkey-patched.  A runtime's library is imported
only when that runtime is first asked for.
"""

from __future__ import annotations

import importlib.util
import socket
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ._sockets import numeric_addrinfo

__all__ = ["Expired", "SyncRuntime", "Task", "get_runtime"]


class Expired(BaseException):
    """Raised inside a green task by its connect deadline; never escapes connpool.net."""


class Task(Protocol):
    """A spawned thread or greenlet."""

    def join(self, timeout: float | None) -> bool:
        """Wait until it finished; ``True`` if it did."""

    def kill(self) -> None:
        """Stop it at its next switch point (green runtimes; a no-op for threads)."""

    def is_current(self) -> bool:
        """Whether the caller runs in this task."""


class SyncRuntime(Protocol):
    """What the sync API needs from a blocking runtime."""

    name: str
    green: bool

    def socket(self, family: int, type_: int, proto: int) -> Any:
        """A new socket of this runtime."""

    def getaddrinfo(self, host: str, port: int, timeout: float | None) -> list[Any]:
        """Resolve ``host`` for TCP; raise :class:`TimeoutError` after ``timeout`` seconds."""

    def deadline(self, seconds: float | None) -> Any:
        """A context manager that raises :class:`Expired` after ``seconds`` (green only)."""

    def wrap_client(self, sock: Any, context: _ssl.SSLContext, server_hostname: str | None) -> Any:
        """A client TLS socket over ``sock`` (handshake not done yet)."""

    def wrap_server(self, sock: Any, context: _ssl.SSLContext) -> Any:
        """A server TLS socket over ``sock`` (handshake not done yet)."""

    def spawn(self, fn: Callable[..., object], *args: Any) -> Task:
        """Run ``fn(*args)`` in a new daemon thread or greenlet."""

    def semaphore(self, value: int) -> Any:
        """A counting semaphore with blocking ``acquire()`` and ``release()``."""

    def sleep(self, seconds: float) -> None:
        """Suspend the caller."""


# ---------------------------------------------------------------- threading


class _ThreadTask:
    __slots__ = ("_thread",)

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    def join(self, timeout: float | None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def kill(self) -> None:
        """Threads cannot be interrupted: the caller must have woken it up."""

    def is_current(self) -> bool:
        return self._thread is threading.current_thread()


class ThreadingRuntime:
    """OS threads and the stdlib ``socket`` and ``ssl`` modules."""

    name = "threading"
    green = False

    def socket(self, family: int, type_: int, proto: int) -> Any:
        return socket.socket(family, type_, proto)

    def getaddrinfo(self, host: str, port: int, timeout: float | None) -> list[Any]:
        infos = numeric_addrinfo(host, port)
        if infos is not None:
            return infos
        if timeout is None:
            return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        # getaddrinfo() cannot be interrupted: run it in a helper thread and
        # stop waiting for it at the deadline (the thread ends on its own).
        outcome: list[Any] = []
        done = threading.Event()

        def resolve() -> None:
            try:
                outcome.append((True, socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)))
            except BaseException as exc:
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=resolve, name="connpool-resolve", daemon=True).start()
        if not done.wait(timeout):
            raise TimeoutError(f"resolving {host!r} took more than {timeout:g}s")
        ok, value = outcome[0]
        if ok:
            return list(value)
        raise value

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        # Threads are bounded by socket timeouts instead.
        yield

    def wrap_client(self, sock: Any, context: _ssl.SSLContext, server_hostname: str | None) -> Any:
        return context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)

    def wrap_server(self, sock: Any, context: _ssl.SSLContext) -> Any:
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def spawn(self, fn: Callable[..., object], *args: Any) -> Task:
        thread = threading.Thread(target=fn, args=args, daemon=True, name=f"connpool-net-{fn.__name__}")
        thread.start()
        return _ThreadTask(thread)

    def semaphore(self, value: int) -> Any:
        return threading.Semaphore(value)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# ------------------------------------------------------------------- gevent


class _GeventTask:
    __slots__ = ("_greenlet",)

    def __init__(self, greenlet: Any) -> None:
        self._greenlet = greenlet

    def join(self, timeout: float | None) -> bool:
        self._greenlet.join(timeout)
        return bool(self._greenlet.dead)

    def kill(self) -> None:
        self._greenlet.kill(block=True, timeout=1.0)

    def is_current(self) -> bool:
        import gevent

        return gevent.getcurrent() is self._greenlet


class GeventRuntime:
    """Greenlets with ``gevent.socket``, ``gevent.ssl`` and ``gevent.Timeout``."""

    name = "gevent"
    green = True

    def __init__(self) -> None:
        import gevent
        import gevent.lock
        import gevent.socket
        import gevent.ssl

        self._gevent = gevent

    def socket(self, family: int, type_: int, proto: int) -> Any:
        return self._gevent.socket.socket(family, type_, proto)

    def getaddrinfo(self, host: str, port: int, timeout: float | None) -> list[Any]:
        infos = numeric_addrinfo(host, port)
        if infos is not None:
            return infos
        return list(self._gevent.socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        if seconds is None:
            yield
            return
        timer = self._gevent.Timeout(seconds, Expired())
        timer.start()
        try:
            yield
        finally:
            timer.close()

    def wrap_client(self, sock: Any, context: _ssl.SSLContext, server_hostname: str | None) -> Any:
        # gevent's SSLSocket accepts any SSLContext through _context (what
        # gevent.ssl.SSLContext.wrap_socket passes); the user's context may be
        # a plain stdlib one, whose own wrap_socket would build a blocking socket.
        return self._gevent.ssl.SSLSocket(
            sock=sock, server_hostname=server_hostname, do_handshake_on_connect=False, _context=context
        )

    def wrap_server(self, sock: Any, context: _ssl.SSLContext) -> Any:
        return self._gevent.ssl.SSLSocket(
            sock=sock, server_side=True, do_handshake_on_connect=False, _context=context
        )

    def spawn(self, fn: Callable[..., object], *args: Any) -> Task:
        return _GeventTask(self._gevent.spawn(fn, *args))

    def semaphore(self, value: int) -> Any:
        return self._gevent.lock.Semaphore(value)

    def sleep(self, seconds: float) -> None:
        self._gevent.sleep(seconds)


# ----------------------------------------------------------------- eventlet


class _EventletTask:
    __slots__ = ("_thread",)

    def __init__(self, thread: Any) -> None:
        self._thread = thread

    def join(self, timeout: float | None) -> bool:
        import eventlet

        if self._thread.dead:
            return True
        timer = eventlet.Timeout(timeout) if timeout is not None else None
        try:
            self._thread.wait()
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            return False
        except BaseException:  # the task's own exit (GreenletExit after a kill)
            pass
        finally:
            if timer is not None:
                timer.cancel()
        return True

    def kill(self) -> None:
        self._thread.kill()

    def is_current(self) -> bool:
        import eventlet

        return eventlet.getcurrent() is self._thread


class EventletRuntime:
    """Green threads with ``eventlet.green.socket``, ``eventlet.green.ssl`` and ``eventlet.Timeout``."""

    name = "eventlet"
    green = True

    def __init__(self) -> None:
        import eventlet
        import eventlet.green.socket
        import eventlet.green.ssl
        import eventlet.semaphore

        self._eventlet = eventlet
        self._socket = eventlet.green.socket
        self._ssl = eventlet.green.ssl
        self._semaphore = eventlet.semaphore.Semaphore

    def socket(self, family: int, type_: int, proto: int) -> Any:
        return self._socket.socket(family, type_, proto)

    def getaddrinfo(self, host: str, port: int, timeout: float | None) -> list[Any]:
        infos = numeric_addrinfo(host, port)
        if infos is not None:
            return infos
        return list(self._socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        if seconds is None:
            yield
            return
        timer = self._eventlet.Timeout(seconds, Expired())
        try:
            yield
        finally:
            timer.cancel()

    def wrap_client(self, sock: Any, context: _ssl.SSLContext, server_hostname: str | None) -> Any:
        # What eventlet.green.ssl.GreenSSLContext.wrap_socket does, for any context.
        return self._ssl.GreenSSLSocket(
            sock, do_handshake_on_connect=False, server_hostname=server_hostname, _context=context
        )

    def wrap_server(self, sock: Any, context: _ssl.SSLContext) -> Any:
        return self._ssl.GreenSSLSocket(
            sock, server_side=True, do_handshake_on_connect=False, _context=context
        )

    def spawn(self, fn: Callable[..., object], *args: Any) -> Task:
        return _EventletTask(self._eventlet.spawn(fn, *args))

    def semaphore(self, value: int) -> Any:
        return self._semaphore(value)

    def sleep(self, seconds: float) -> None:
        self._eventlet.sleep(seconds)


# -------------------------------------------------------------------- table

_FACTORIES: dict[str, tuple[Callable[[], SyncRuntime], str | None]] = {
    "threading": (ThreadingRuntime, None),
    "gevent": (GeventRuntime, "gevent"),
    "eventlet": (EventletRuntime, "eventlet"),
}
_instances: dict[str, SyncRuntime] = {}


def get_runtime(backend: object) -> SyncRuntime:
    """The runtime for ``backend``: a name, ``"auto"``, or a scheduler object with ``.name``."""
    name = backend if isinstance(backend, str) else getattr(backend, "name", None)
    if name == "auto":
        from connpool.backends import detect_sync_backend

        name = detect_sync_backend()
    runtime = _instances.get(name) if isinstance(name, str) else None
    if runtime is not None:
        return runtime
    if name in ("asyncio", "trio"):
        raise ValueError(
            f"backend {name!r} is an async runtime: use connect_tcp_async(), serve_tcp_async() "
            "or AsyncTCPConnector"
        )
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ValueError(
            f"unknown sync backend {backend!r}: choose 'threading', 'gevent', 'eventlet' or 'auto'"
        )
    factory, dist = _FACTORIES[name]
    if dist is not None and importlib.util.find_spec(dist) is None:
        raise ImportError(
            f"backend {name!r} needs the {dist} library, which is not installed: "
            f'pip install "connpool[{dist}]"'
        )
    runtime = _instances[name] = factory()
    return runtime
