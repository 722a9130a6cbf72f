"""The async API for asyncio and trio: :func:`connect_tcp_async`, :class:`AsyncStream`,
:func:`serve_tcp_async`, :class:`AsyncServer`.

The running library is found with sniffio on every call; nothing binds to an
event loop before it is used.  asyncio streams come from
:func:`asyncio.open_connection`; trio streams are :class:`trio.SocketStream`
or :class:`trio.SSLStream`.  trio is imported only when trio runs the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import Attempt, NetError, first_connect_cause, format_address
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
    numeric_addrinfo,
    probe,
    server_tls_context,
)

if TYPE_CHECKING:
    import trio

__all__ = ["AsyncServer", "AsyncServerStarter", "AsyncStream", "connect_tcp_async", "serve_tcp_async"]

log = logging.getLogger("connpool.net")

AsyncHandler = Callable[["AsyncStream", Any], Awaitable[object]]


def _current_library() -> str:
    import sniffio

    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError("connpool.net's async API must run inside an asyncio or trio event loop") from None
    if library not in ("asyncio", "trio"):
        raise RuntimeError(f"unsupported async library {library!r}: connpool.net runs on asyncio and trio")
    return library


def _closed_error() -> OSError:
    return OSError(errno.EBADF, "stream is closed")


# ------------------------------------------------------------------- stream


class AsyncStream:
    """A connected TCP (or TLS) byte stream of an async runtime (asyncio or trio).

    ``await send_all(data)``, ``await receive(max_bytes)`` (``b""`` at end of
    stream), ``await aclose()``; ``close()`` is a plain call that never
    blocks (for pool close hooks and ``finally`` blocks), and
    ``is_peer_closed()`` is a plain, non-blocking liveness check.  I/O errors
    are :class:`OSError` on both runtimes (trio's ``BrokenResourceError`` is
    translated).  ``socket`` is the underlying socket, for options.  An
    async context manager that closes it.
    """

    backend: str = ""
    _closed: bool
    _tls: bool

    @property
    def socket(self) -> Any:
        """The underlying socket (asyncio: the transport's socket; trio: a trio socket)."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`aclose` was called."""
        return self._closed

    @property
    def tls(self) -> bool:
        """Whether the stream is encrypted."""
        return self._tls

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``, waiting while the send buffer is full."""
        raise NotImplementedError

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes, waiting for at least one; ``b""`` once the peer closed."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the stream, waiting until it is closed; calling it again does nothing."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the stream now without waiting (no TLS close_notify); idempotent."""
        raise NotImplementedError

    def is_peer_closed(self) -> bool:
        """Whether the connection is unusable, found out without blocking or a round trip.

        ``True`` when the peer closed or reset it, when this side closed it,
        and when unexpected plain-TCP data is waiting; ``False`` for a live,
        idle connection.  On TLS streams, pending encrypted records cannot be
        told apart synchronously from session tickets, so only a FIN or reset
        counts (asyncio decrypts in the background and reports data it
        received).  Never raises.
        """
        raise NotImplementedError

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        kind = "TLS" if self._tls else "TCP"
        return f"<AsyncStream {kind} {self.backend} {state}>"

    def _probe(self) -> bool:
        state = probe(self.socket)
        if state == "data":
            return not self._tls
        return state == "closed"


class _AsyncioStream(AsyncStream):
    backend = "asyncio"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        self._reader = reader
        self._writer = writer
        self._tls = tls
        self._closed = False

    @property
    def socket(self) -> Any:
        return self._writer.get_extra_info("socket")

    async def send_all(self, data: bytes) -> None:
        if self._closed:
            raise _closed_error()
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        if self._closed:
            raise _closed_error()
        return await self._reader.read(max_bytes)

    async def aclose(self) -> None:
        if self._closed:
            return
        self.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        except RuntimeError:  # the event loop is closed: close the socket itself
            sock = getattr(self._writer.transport, "_sock", None)
            if sock is not None:
                sock.close()

    def is_peer_closed(self) -> bool:
        if self._closed:
            return True
        try:
            if self._writer.transport.is_closing() or self._reader.exception() is not None:
                return True
            # The event loop reads in the background: EOF and unexpected data
            # may already sit in the reader.
            if self._reader.at_eof() or len(getattr(self._reader, "_buffer", b"")):
                return True
            return self._probe()
        except (OSError, ValueError, RuntimeError):
            return True


class _TrioStream(AsyncStream):
    backend = "trio"

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream], *, tls: bool) -> None:
        import trio

        self._stream = stream
        self._trio = trio
        self._tls = tls
        self._closed = False
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        self._socket = transport.socket

    @property
    def socket(self) -> Any:
        return self._socket

    async def send_all(self, data: bytes) -> None:
        trio = self._trio
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError as exc:
            raise _broken(exc) from exc
        except trio.ClosedResourceError as exc:
            raise _closed_error() from exc

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        trio = self._trio
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except trio.BrokenResourceError as exc:
            raise _broken(exc) from exc
        except trio.ClosedResourceError as exc:
            raise _closed_error() from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stream.aclose()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._socket.close()

    def is_peer_closed(self) -> bool:
        if self._closed:
            return True
        try:
            return self._probe()
        except (OSError, ValueError):
            return True


def _broken(exc: BaseException) -> OSError:
    """An :class:`OSError` for trio's ``BrokenResourceError`` (a copy of its OSError cause)."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno is not None and cause.strerror is not None:
        return type(cause)(cause.errno, cause.strerror)
    return ConnectionResetError(errno.ECONNRESET, f"connection broken: {cause or exc}")


# ------------------------------------------------------------------ connect


async def connect_tcp_async(
    host: str,
    port: int,
    *,
    timeout: float | None = 10.0,
    ssl: _ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    nodelay: bool = True,
    keepalive: Keepalive | bool | None = None,
) -> AsyncStream:
    """Open a TCP connection (optionally TLS) on the running asyncio or trio loop.

    The parameters and errors are those of :func:`connpool.net.connect_tcp`:
    ``timeout`` bounds DNS, TCP connect and TLS handshake together, and a
    failure raises :class:`ResolveError`, :class:`ConnectRefused`,
    :class:`ConnectTimeout`, :class:`TLSError` or :class:`NetError`.
    Cancelling the call closes whatever was opened.
    """
    library = _current_library()
    port = check_port(port, allow_zero=False)
    timeout = check_timeout(timeout)
    keepalive = check_keepalive(keepalive)
    context = client_tls_context(ssl)
    check_server_hostname(server_hostname, context)
    if context is not None and server_hostname is None:
        server_hostname = host
    attempt = Attempt(host, port, timeout)
    if library == "trio":
        return await _trio_connect(attempt, context, server_hostname, nodelay, keepalive)
    return await _asyncio_connect(attempt, context, server_hostname, nodelay, keepalive)


async def _asyncio_connect(
    attempt: Attempt,
    context: _ssl.SSLContext | None,
    server_hostname: str | None,
    nodelay: bool,
    keepalive: Keepalive | bool | None,
) -> AsyncStream:
    opening = _asyncio_open(attempt, context, server_hostname, nodelay, keepalive)
    if attempt.timeout is None:
        return await opening
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(attempt.timeout):
                return await opening
        else:  # pragma: no cover - Python 3.10
            return await asyncio.wait_for(opening, attempt.timeout)
    except asyncio.TimeoutError as exc:
        raise attempt.timeout_error() from exc


async def _asyncio_open(
    attempt: Attempt,
    context: _ssl.SSLContext | None,
    server_hostname: str | None,
    nodelay: bool,
    keepalive: Keepalive | bool | None,
) -> AsyncStream:
    loop = asyncio.get_running_loop()
    infos = numeric_addrinfo(attempt.host, attempt.port)
    if infos is None:
        try:
            infos = await loop.getaddrinfo(attempt.host, attempt.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise attempt.resolve_error(exc) from exc
    if not infos:
        raise attempt.resolve_error(None)

    async def connect(sock: socket.socket, sockaddr: Any) -> None:
        sock.setblocking(False)
        await loop.sock_connect(sock, sockaddr)

    sock = await _first_connected(attempt, infos, socket.socket, connect)

    if context is not None:
        attempt.phase = "TLS handshake"
    try:
        # From here on the transport owns the socket and closes it on failure.
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=context, server_hostname=server_hostname if context is not None else None
        )
    except (OSError, ValueError) as exc:
        if context is None:
            raise NetError(
                f"cannot connect to {attempt.where}: {exc}", host=attempt.host, port=attempt.port
            ) from exc
        raise attempt.tls_error(exc) from exc
    stream = _AsyncioStream(reader, writer, tls=context is not None)
    try:
        configure_socket(stream.socket, nodelay=nodelay, keepalive=keepalive)
    except BaseException:
        stream.close()
        raise
    return stream


async def _first_connected(
    attempt: Attempt,
    infos: list[Any],
    new_socket: Callable[[int, int, int], Any],
    connect: Callable[[Any, Any], Awaitable[None]],
) -> Any:
    """The first socket that connects, trying the resolved addresses in order (asyncio and trio).

    A failed candidate is closed; when none connects, the attempt's connect
    error is raised, chained to the most telling cause.
    """
    errors: list[OSError] = []
    for family, type_, proto, _canonname, sockaddr in infos:
        attempt.connecting_to(sockaddr)
        candidate = new_socket(family, type_, proto)
        try:
            await connect(candidate, sockaddr)
        except OSError as exc:
            candidate.close()
            errors.append(exc)
            continue
        except BaseException:
            candidate.close()
            raise
        return candidate
    raise attempt.connect_error(errors) from first_connect_cause(errors)


async def _trio_connect(
    attempt: Attempt,
    context: _ssl.SSLContext | None,
    server_hostname: str | None,
    nodelay: bool,
    keepalive: Keepalive | bool | None,
) -> AsyncStream:
    import trio

    stream = None
    with trio.move_on_after(math.inf if attempt.timeout is None else attempt.timeout):
        stream = await _trio_open(attempt, context, server_hostname, nodelay, keepalive)
    if stream is None:
        raise attempt.timeout_error()
    return stream


async def _trio_open(
    attempt: Attempt,
    context: _ssl.SSLContext | None,
    server_hostname: str | None,
    nodelay: bool,
    keepalive: Keepalive | bool | None,
) -> AsyncStream:
    import trio

    try:
        infos = await trio.socket.getaddrinfo(attempt.host, attempt.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise attempt.resolve_error(exc) from exc
    if not infos:
        raise attempt.resolve_error(None)

    async def connect(sock: Any, sockaddr: Any) -> None:
        await sock.connect(sockaddr)

    sock = await _first_connected(attempt, infos, trio.socket.socket, connect)

    try:
        transport = trio.SocketStream(sock)  # sets TCP_NODELAY: configure after
        configure_socket(sock, nodelay=nodelay, keepalive=keepalive)
        if context is None:
            return _TrioStream(transport, tls=False)
        attempt.phase = "TLS handshake"
        # https_compatible: like the stdlib's sockets, send no close_notify and
        # treat an EOF without one as a normal end of stream.
        tls_stream = trio.SSLStream(
            transport, context, server_hostname=server_hostname, https_compatible=True
        )
        try:
            await tls_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise attempt.tls_error(cause) from cause
        return _TrioStream(tls_stream, tls=True)
    except BaseException:
        sock.close()
        raise


# ------------------------------------------------------------------- server


class AsyncServer:
    """A TCP server running as background tasks on asyncio or trio.

    Made by :func:`serve_tcp_async`.  ``address`` is the ``(host, port)`` it
    listens on, ``port`` the port.  ``await aclose()`` stops accepting,
    closes the listening socket, closes every client stream, cancels the
    handlers and waits for them.  ``async with server:`` closes it at the end.
    """

    def __init__(
        self,
        handler: AsyncHandler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        concurrency: int = 1000,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, got {handler!r}")
        self._handler = handler
        self._host = host
        self._port = check_port(port, allow_zero=True)
        self._concurrency = check_concurrency(concurrency)
        self._context = server_tls_context(ssl)
        self._backlog = backlog
        self._streams: set[AsyncStream] = set()
        self._closing = False
        self._started = False
        self.address: tuple[str, int] = (host, self._port)
        self.backend = ""
        # asyncio
        self._acceptor: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._listener: Any = None
        # trio
        self._cancel_scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.address[1]

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closing

    def _where(self) -> str:
        return format_address(*self.address)

    async def _start(self, task_group: Any) -> None:
        if self._started:
            raise RuntimeError("the server is already started")
        self._started = True
        self.backend = _current_library()
        if self.backend == "trio":
            if task_group is None:
                raise RuntimeError(
                    "on trio a server runs in a nursery: pass task_group=<nursery> to serve_tcp_async(), "
                    "or use `async with serve_tcp_async(...) as server:`"
                )
            await task_group.start(self._trio_serve)
        else:
            self._asyncio_start(task_group)

    async def _call_handler(self, stream: AsyncStream, address: Any) -> None:
        try:
            await self._handler(stream, address)
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

    # -- asyncio

    def _asyncio_start(self, task_group: Any) -> None:
        family, type_, proto, sockaddr = listen_addrinfo(self._host, self._port)
        listener = socket.socket(family, type_, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(self._backlog)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise NetError(f"cannot listen on {format_address(self._host, self._port)}: {exc}") from exc
        self._listener = listener
        self.address = _bound_address(listener)
        semaphore = asyncio.Semaphore(self._concurrency)
        coroutine = self._asyncio_accept(listener, semaphore)
        if task_group is not None:
            self._acceptor = task_group.create_task(coroutine)
        else:
            self._acceptor = asyncio.get_running_loop().create_task(coroutine)

    async def _asyncio_accept(self, listener: socket.socket, semaphore: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await semaphore.acquire()  # at the concurrency limit, stop accepting
            try:
                conn, address = await loop.sock_accept(listener)
            except OSError:
                semaphore.release()
                if self._closing:
                    return
                log.exception("connpool.net server %s: accept() failed", self._where())
                await asyncio.sleep(0.1)
                continue
            except BaseException:
                semaphore.release()
                raise
            task = loop.create_task(self._asyncio_handle(conn, address, semaphore))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _asyncio_handle(self, conn: socket.socket, address: Any, semaphore: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        stream = None
        try:
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    conn,
                    ssl=self._context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._context is not None else None,
                )
            except (OSError, ValueError, asyncio.TimeoutError) as exc:
                log.debug(
                    "connpool.net server %s: connection from %s failed: %r", self._where(), address, exc
                )
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            stream = _AsyncioStream(reader, writer, tls=self._context is not None)
            self._streams.add(stream)
            await self._call_handler(stream, address)
        finally:
            if stream is not None:
                self._streams.discard(stream)
                stream.close()
            semaphore.release()

    async def _asyncio_close(self) -> None:
        acceptor = self._acceptor
        if acceptor is not None:
            acceptor.cancel()
            await asyncio.wait([acceptor])
        if self._listener is not None:
            self._listener.close()
        for stream in list(self._streams):
            stream.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers)

    # -- trio

    async def _trio_serve(self, *, task_status: Any) -> None:
        import trio

        self._done = trio.Event()
        try:
            family, type_, proto, sockaddr = listen_addrinfo(self._host, self._port)
            listener = trio.socket.socket(family, type_, proto)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await listener.bind(sockaddr)
                listener.listen(self._backlog)
            except OSError as exc:
                listener.close()
                raise NetError(f"cannot listen on {format_address(self._host, self._port)}: {exc}") from exc
            self.address = _bound_address(listener)
            with listener:
                async with trio.open_nursery() as nursery:
                    self._cancel_scope = nursery.cancel_scope
                    task_status.started()
                    await self._trio_accept(listener, nursery)
        finally:
            self._done.set()

    async def _trio_accept(self, listener: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        import trio

        semaphore = trio.Semaphore(self._concurrency)
        while True:
            await semaphore.acquire()  # at the concurrency limit, stop accepting
            try:
                conn, address = await listener.accept()
            except OSError:
                semaphore.release()
                log.exception("connpool.net server %s: accept() failed", self._where())
                await trio.sleep(0.1)
                continue
            except BaseException:
                semaphore.release()
                raise
            nursery.start_soon(self._trio_handle, conn, address, semaphore)

    async def _trio_handle(
        self, conn: trio.socket.SocketType, address: Any, semaphore: trio.Semaphore
    ) -> None:
        import trio

        stream: _TrioStream | None = None
        try:
            transport = trio.SocketStream(conn)
            if self._context is None:
                stream = _TrioStream(transport, tls=False)
            else:
                tls_stream = trio.SSLStream(transport, self._context, server_side=True, https_compatible=True)
                try:
                    with trio.fail_after(HANDSHAKE_TIMEOUT):
                        await tls_stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                    log.debug(
                        "connpool.net server %s: TLS handshake with %s failed: %r",
                        self._where(),
                        address,
                        exc,
                    )
                    return
                stream = _TrioStream(tls_stream, tls=True)
            self._streams.add(stream)
            await self._call_handler(stream, address)
        finally:
            if stream is not None:
                self._streams.discard(stream)
                stream.close()
            else:
                conn.close()
            semaphore.release()

    # -- closing

    async def aclose(self) -> None:
        """Stop the server: no new connections, close client streams, cancel and await the handlers.

        Idempotent; a second call waits for the first one to finish.
        """
        if not self._started:
            self._closing = True
            return
        if self.backend == "trio":
            assert self._done is not None
            if not self._closing:
                self._closing = True
                for stream in list(self._streams):
                    stream.close()
                if self._cancel_scope is not None:
                    self._cancel_scope.cancel()
            await self._done.wait()
            return
        if self._closing:
            return
        self._closing = True
        await self._asyncio_close()

    async def __aenter__(self) -> AsyncServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "serving" if self._started else "not started"
        tls = " TLS" if self._context is not None else ""
        return f"<AsyncServer{tls} {self._where()} {self.backend or '?'} {state}>"


def _bound_address(listener: Any) -> tuple[str, int]:
    host, port = listener.getsockname()[:2]
    return (str(host), int(port))


class AsyncServerStarter:
    """What :func:`serve_tcp_async` returns: await it, or use it with ``async with``.

    ``server = await serve_tcp_async(...)`` starts the server and returns the
    :class:`AsyncServer`; the caller closes it with ``await server.aclose()``.
    On trio this form needs ``task_group=`` (a nursery that outlives the
    server).  ``async with serve_tcp_async(...) as server:`` works on both
    runtimes without a task group (on trio it opens its own nursery) and
    closes the server when the block ends.
    """

    def __init__(self, server: AsyncServer, task_group: Any) -> None:
        self._server = server
        self._task_group = task_group
        self._nursery_manager: Any = None

    def __await__(self) -> Generator[Any, None, AsyncServer]:
        return self._start().__await__()

    async def _start(self) -> AsyncServer:
        await self._server._start(self._task_group)
        return self._server

    async def __aenter__(self) -> AsyncServer:
        task_group = self._task_group
        if task_group is None and _current_library() == "trio":
            import trio

            self._nursery_manager = trio.open_nursery()
            task_group = await self._nursery_manager.__aenter__()
        try:
            await self._server._start(task_group)
        except BaseException:
            if self._nursery_manager is not None:
                await self._nursery_manager.__aexit__(None, None, None)
            raise
        return self._server

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._server.aclose()
        finally:
            if self._nursery_manager is not None:
                # The nursery holds only the server's task, finished by now; an
                # exception from the block propagates as it is (not in a group).
                await self._nursery_manager.__aexit__(None, None, None)


def serve_tcp_async(
    handler: AsyncHandler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    concurrency: int = 1000,
    ssl: _ssl.SSLContext | None = None,
    task_group: Any = None,
    backlog: int = 128,
) -> AsyncServerStarter:
    """Serve TCP on the running asyncio or trio loop; await the result, or ``async with`` it.

    Each connection runs ``await handler(stream, address)`` in its own task
    with an :class:`AsyncStream`; returning from the handler closes the
    stream.  At most ``concurrency`` handlers run at once: at the limit the
    server stops accepting until one returns.  ``port=0`` picks a free port
    (``server.port``).  With ``ssl`` (an :class:`ssl.SSLContext` holding the
    certificate) the TLS handshake runs in the handler's task, bounded to 10
    seconds.  Exceptions escaping a handler are logged on the
    ``connpool.net`` logger and never stop the server.

    Two forms::

        async with serve_tcp_async(handler) as server:     # asyncio and trio
            ...                                            # closed at the end

        server = await serve_tcp_async(handler)            # asyncio
        server = await serve_tcp_async(handler, task_group=nursery)   # trio
        ...
        await server.aclose()

    On trio the server's tasks live in ``task_group`` (a :class:`trio.Nursery`);
    on asyncio ``task_group`` may be an :class:`asyncio.TaskGroup` to own the
    accepting task, and handlers are tasks owned by the server.
    """
    server = AsyncServer(handler, host, port, concurrency=concurrency, ssl=ssl, backlog=backlog)
    return AsyncServerStarter(server, task_group)
