"""The blocking API: :func:`connect_tcp`, :class:`Stream`, :func:`serve_tcp`, :class:`Server`."""

from __future__ import annotations

import itertools
import logging
import selectors
import socket
import ssl as _ssl
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._errors import Attempt, NetError, first_connect_cause, format_address
from ._runtimes import Expired, SyncRuntime, Task, get_runtime
from ._sockets import (
    HANDSHAKE_TIMEOUT,
    Keepalive,
    check_concurrency,
    check_keepalive,
    check_port,
    check_server_hostname,
    check_timeout,
    client_tls_context,
    configure_socket,
    listen_addrinfo,
    probe,
    server_tls_context,
    shutdown_fd,
)

__all__ = ["Server", "Stream", "connect_tcp", "serve_tcp"]

log = logging.getLogger("connpool.net")

_TLS_WOULD_BLOCK = (_ssl.SSLWantReadError, _ssl.SSLWantWriteError, BlockingIOError, InterruptedError)


class Stream:
    """A connected TCP (or TLS) byte stream of a blocking runtime.

    ``send_all(data)`` sends everything, ``receive(max_bytes)`` returns up to
    ``max_bytes`` bytes (``b""`` at end of stream), ``close()`` closes it
    (idempotent), ``is_peer_closed()`` tells without a round trip whether the
    peer went away.  ``socket`` is the underlying socket (a TLS socket for
    TLS streams) for options and timeouts.  I/O errors are :class:`OSError`.
    A stream is a context manager that closes it.
    """

    __slots__ = ("_buffer", "_closed", "_sock", "_tls", "backend")

    def __init__(self, sock: Any, *, backend: str = "threading") -> None:
        self._sock = sock
        self._tls = callable(getattr(sock, "cipher", None))
        self._buffer = b""
        self._closed = False
        #: Name of the runtime whose socket this is.
        self.backend = backend

    @property
    def socket(self) -> Any:
        """The underlying socket (a TLS socket when the stream is encrypted)."""
        return self._sock

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def tls(self) -> bool:
        """Whether the stream is encrypted."""
        return self._tls

    def send_all(self, data: bytes) -> None:
        """Send all of ``data``, blocking (the caller's thread or greenlet) until it is sent."""
        self._sock.sendall(data)

    def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes, waiting for at least one; ``b""`` once the peer closed."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        if self._buffer:
            data, self._buffer = self._buffer[:max_bytes], self._buffer[max_bytes:]
            return data
        data = self._sock.recv(max_bytes)
        return bytes(data)

    def close(self) -> None:
        """Close the stream (no TLS close_notify is sent); calling it again does nothing."""
        if not self._closed:
            self._closed = True
            self._sock.close()

    def is_peer_closed(self) -> bool:
        """Whether the connection is unusable, found out without blocking or a round trip.

        ``True`` when the peer closed or reset it, when this side closed it,
        and when unexpected data is waiting (the protocol state is unknown).
        ``False`` for a live, idle connection.  On a TLS stream, TLS records
        that are not application data (TLS 1.3 session tickets) are processed
        without blocking and do not count as data.  Never raises.  Call it
        while no other thread or greenlet uses the stream (as a pool does, at
        checkout); unexpected data it reads is kept for :meth:`receive`.
        """
        if self._closed or self._buffer:
            return True
        try:
            if self._tls and self._sock.pending():
                return True
            state = probe(self._sock)
            if state != "data":
                return state == "closed"
            return not self._tls or self._tls_data_pending()
        except (OSError, ValueError):
            return True

    def _tls_data_pending(self) -> bool:
        """Read pending TLS records without blocking: True for app data, EOF or errors."""
        sock = self._sock
        for _ in range(4):
            previous = sock.gettimeout()
            sock.setblocking(False)
            try:
                data = sock.recv(65536)
            except _TLS_WOULD_BLOCK:
                data = None
            except (OSError, ValueError):
                return True
            finally:
                _restore_timeout(sock, previous)
            if data is not None:
                # Application data nobody asked for, or b"" for close_notify/EOF.
                self._buffer += data
                return True
            # Only handshake records (session tickets) were pending: look again.
            state = probe(sock)
            if state != "data":
                return state == "closed"
        return False

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        kind = "TLS" if self._tls else "TCP"
        return f"<Stream {kind} {self.backend} {state} fd={_fileno(self._sock)}>"


def _fileno(sock: Any) -> int:
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1


def _restore_timeout(sock: Any, previous: float | None) -> None:
    if previous == 0.0:
        return
    # setblocking(True) first: eventlet's settimeout() alone keeps a green
    # socket non-blocking.
    sock.setblocking(True)
    if previous is not None:
        sock.settimeout(previous)


# ------------------------------------------------------------------ connect


def connect_tcp(
    host: str,
    port: int,
    *,
    timeout: float | None = 10.0,
    ssl: _ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    nodelay: bool = True,
    keepalive: Keepalive | bool | None = None,
    backend: object = "auto",
) -> Stream:
    """Open a TCP connection (optionally TLS) and return a :class:`Stream`.

    ``timeout`` bounds the whole attempt: DNS resolution, the TCP connect to
    each address in turn and the TLS handshake (``None``: no bound).  ``ssl``
    is an :class:`ssl.SSLContext`, or ``True`` for
    :func:`ssl.create_default_context`; ``server_hostname`` (default: ``host``)
    is checked against the certificate and sent as SNI.  ``nodelay`` sets
    TCP_NODELAY.  ``keepalive=(idle, interval, count)`` turns SO_KEEPALIVE on
    and sets TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT on this socket only, where
    the platform has them (``True``/``False``: just SO_KEEPALIVE on/off).
    ``backend``: ``"threading"``, ``"gevent"``, ``"eventlet"`` or ``"auto"``
    (:func:`connpool.backends.detect_sync_backend`); gevent and eventlet use
    their own green sockets, so they never block the hub, patched or not.

    Raises :class:`ResolveError`, :class:`ConnectRefused`,
    :class:`ConnectTimeout`, :class:`TLSError` or :class:`NetError` with the
    original error as ``__cause__``.
    """
    runtime = get_runtime(backend)
    port = check_port(port, allow_zero=False)
    timeout = check_timeout(timeout)
    keepalive = check_keepalive(keepalive)
    context = client_tls_context(ssl)
    check_server_hostname(server_hostname, context)
    if context is not None and server_hostname is None:
        server_hostname = host
    attempt = Attempt(host, port, timeout)
    try:
        with runtime.deadline(timeout):
            sock = _open(
                runtime,
                attempt,
                context=context,
                server_hostname=server_hostname,
                nodelay=nodelay,
                keepalive=keepalive,
            )
    except Expired:
        raise attempt.timeout_error() from None
    return Stream(sock, backend=runtime.name)


def _open(
    runtime: SyncRuntime,
    attempt: Attempt,
    *,
    context: _ssl.SSLContext | None,
    server_hostname: str | None,
    nodelay: bool,
    keepalive: Keepalive | bool | None,
) -> Any:
    try:
        infos = runtime.getaddrinfo(attempt.host, attempt.port, attempt.remaining())
    except TimeoutError as exc:
        raise attempt.timeout_error() from exc
    except OSError as exc:
        raise attempt.resolve_error(exc) from exc
    if not infos:
        raise attempt.resolve_error(None)

    errors: list[OSError] = []
    sock = None
    for family, type_, proto, _canonname, sockaddr in infos:
        attempt.connecting_to(sockaddr)
        candidate = runtime.socket(family, type_, proto)
        try:
            candidate.settimeout(attempt.remaining())
            candidate.connect(sockaddr)
        except TimeoutError as exc:
            candidate.close()
            raise attempt.timeout_error() from exc
        except OSError as exc:
            candidate.close()
            if attempt.expired():
                raise attempt.timeout_error() from exc
            errors.append(exc)
            continue
        except BaseException:
            candidate.close()
            raise
        sock = candidate
        break
    if sock is None:
        raise attempt.connect_error(errors) from first_connect_cause(errors)

    try:
        configure_socket(sock, nodelay=nodelay, keepalive=keepalive)
        if context is not None:
            attempt.phase = "TLS handshake"
            sock = runtime.wrap_client(sock, context, server_hostname)
            try:
                sock.settimeout(attempt.remaining())
                sock.do_handshake()
            except TimeoutError as exc:
                raise attempt.timeout_error() from exc
            except (OSError, ValueError) as exc:
                if attempt.expired():
                    raise attempt.timeout_error() from exc
                raise attempt.tls_error(exc) from exc
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


# ------------------------------------------------------------------- server

Handler = Callable[[Stream, Any], object]


class _Connection:
    __slots__ = ("sock", "task")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.task: Task | None = None


class Server:
    """A TCP server running in the background; made by :func:`serve_tcp`.

    ``address`` is the ``(host, port)`` it listens on, ``port`` the port.
    ``close()`` stops accepting, closes the listening socket, wakes up every
    handler by shutting its connection down and waits for the handlers to
    return.  The server is a context manager that closes it.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        concurrency: int = 1000,
        ssl: _ssl.SSLContext | None = None,
        backend: object = "auto",
        backlog: int = 128,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        self._runtime = get_runtime(backend)
        self._handler = handler
        self._context = server_tls_context(ssl)
        concurrency = check_concurrency(concurrency)
        port = check_port(port, allow_zero=True)
        self._lock = threading.Lock()
        self._closing = False
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count()
        self._semaphore = self._runtime.semaphore(concurrency)
        self._listener = self._listen(host, port, backlog)
        host_, port_ = self._listener.getsockname()[:2]
        self.address: tuple[str, int] = (host_, port_)
        # A blocked accept() in a thread cannot be interrupted: the thread
        # waits in a selector that close() wakes up through a socket pair.
        # Green acceptors are simply killed.
        self._selector: selectors.BaseSelector | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        if not self._runtime.green:
            self._listener.setblocking(False)
            self._wakeup = socket.socketpair()
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._listener, selectors.EVENT_READ)
            self._selector.register(self._wakeup[0], selectors.EVENT_READ)
        self._acceptor = self._runtime.spawn(self._accept_loop)

    def _listen(self, host: str, port: int, backlog: int) -> Any:
        try:
            family, type_, proto, sockaddr = listen_addrinfo(host, port)
        except OSError as exc:
            raise NetError(
                f"cannot listen on {format_address(host, port)}: {exc}", host=host, port=port
            ) from exc
        sock = self._runtime.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            raise NetError(
                f"cannot listen on {format_address(host, port)}: {exc}", host=host, port=port, errno=exc.errno
            ) from exc
        return sock

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.address[1]

    @property
    def backend(self) -> str:
        """Name of the runtime the server runs on."""
        return self._runtime.name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing

    # -- accepting

    def _accept_loop(self) -> None:
        while True:
            self._semaphore.acquire()  # at the concurrency limit, stop accepting
            try:
                if self._closing or not self._wait_readable():
                    self._semaphore.release()
                    return
                conn, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                self._semaphore.release()
                continue
            except OSError:
                self._semaphore.release()
                if self._closing:
                    return
                log.exception("connpool.net server %s: accept() failed", self._where())
                self._runtime.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            except BaseException:
                self._semaphore.release()
                raise
            self._start_handler(conn, address)

    def _wait_readable(self) -> bool:
        """Threads: wait until a client is pending (``False`` when woken up to close)."""
        if self._selector is None:
            return True
        while not self._closing:
            for key, _events in self._selector.select():
                if key.fileobj is self._listener:
                    return not self._closing
        return False

    def _start_handler(self, conn: Any, address: Any) -> None:
        connection = _Connection(conn)
        with self._lock:
            if self._closing:
                conn.close()
                self._semaphore.release()
                return
            key = next(self._ids)
            self._connections[key] = connection
        connection.task = self._runtime.spawn(self._run_handler, key, connection, address)

    def _run_handler(self, key: int, connection: _Connection, address: Any) -> None:
        stream = None
        try:
            connection.sock.settimeout(None)
            if self._context is not None and not self._handshake(connection, address):
                return
            stream = Stream(connection.sock, backend=self._runtime.name)
            try:
                self._handler(stream, address)
            except Exception:
                if self._closing:
                    log.debug(
                        "connpool.net server %s: handler failed while closing", self._where(), exc_info=True
                    )
                else:
                    log.exception(
                        "connpool.net server %s: handler %s failed for client %s",
                        self._where(),
                        getattr(self._handler, "__qualname__", self._handler),
                        address,
                    )
        finally:
            with self._lock:
                del self._connections[key]
            if stream is not None:
                stream.close()
            else:
                connection.sock.close()
            self._semaphore.release()

    def _handshake(self, connection: _Connection, address: Any) -> bool:
        assert self._context is not None
        try:
            with self._runtime.deadline(HANDSHAKE_TIMEOUT):
                with self._lock:
                    if self._closing:
                        return False
                    connection.sock = self._runtime.wrap_server(connection.sock, self._context)
                connection.sock.settimeout(HANDSHAKE_TIMEOUT)
                connection.sock.do_handshake()
                connection.sock.settimeout(None)
        except (OSError, ValueError, Expired) as exc:
            log.debug("connpool.net server %s: TLS handshake with %s failed: %r", self._where(), address, exc)
            return False
        return True

    def _where(self) -> str:
        return format_address(*self.address)

    # -- closing

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the server and wait (up to ``timeout`` seconds) for its handlers to return.

        Stops accepting, closes the listening socket, shuts every client
        connection down (a handler blocked reading sees end of stream) and
        joins the handlers.  Green handlers still running after ``timeout``
        are killed; threads cannot be, and are reported in a warning.
        Idempotent; safe to call from a handler (it does not wait for itself).
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
        deadline = None if timeout is None else time.monotonic() + timeout

        # 1. stop the acceptor
        if self._runtime.green:
            if not self._acceptor.is_current():
                self._acceptor.kill()
        else:
            assert self._wakeup is not None
            self._wakeup[1].send(b"x")
            self._semaphore.release()
            self._acceptor.join(_left(deadline))
        self._listener.close()

        # 2. wake up the handlers, 3. wait for them
        with self._lock:
            connections = list(self._connections.values())
            for connection in connections:
                shutdown_fd(connection.sock)
        stuck = 0
        for connection in connections:
            task = connection.task
            if task is None or task.is_current():
                continue
            if not task.join(_left(deadline)):
                if self._runtime.green:
                    task.kill()
                else:
                    stuck += 1
        if stuck:
            log.warning(
                "connpool.net server %s: %d handler thread(s) still running after close()",
                self._where(),
                stuck,
            )

        if self._selector is not None:
            self._selector.close()
        if self._wakeup is not None:
            for sock in self._wakeup:
                sock.close()

    def serve_forever(self) -> None:
        """Block the caller (thread or greenlet) until :meth:`close` is called elsewhere."""
        self._acceptor.join(None)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "serving"
        tls = " TLS" if self._context is not None else ""
        return f"<Server{tls} {self._where()} {self._runtime.name} {state}>"


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def serve_tcp(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    concurrency: int = 1000,
    ssl: _ssl.SSLContext | None = None,
    backend: object = "auto",
    backlog: int = 128,
) -> Server:
    """Start a TCP server in the background and return its :class:`Server`.

    Each connection runs ``handler(stream, address)`` in its own thread or
    greenlet (``backend`` as for :func:`connect_tcp`); returning from the
    handler closes the stream.  At most ``concurrency`` handlers run at once:
    at the limit the server stops accepting until one returns (clients wait
    in the listen backlog).  ``port=0`` picks a free port (see
    ``server.port``).  With ``ssl`` (an :class:`ssl.SSLContext` holding the
    certificate) the TLS handshake happens in the handler's task, bounded to
    10 seconds; a failed handshake is logged at DEBUG level.  An exception
    escaping a handler is logged on the ``connpool.net`` logger and never
    stops the server.
    """
    return Server(handler, host, port, concurrency=concurrency, ssl=ssl, backend=backend, backlog=backlog)
