"""Connector objects: what :class:`connpool.Pool` and :class:`connpool.AsyncPool` take as ``connect``."""

from __future__ import annotations

import ssl as _ssl
from typing import Any

from ._async import AsyncStream, connect_tcp_async
from ._errors import format_address
from ._sockets import (
    Keepalive,
    check_keepalive,
    check_port,
    check_server_hostname,
    check_timeout,
    client_tls_context,
)
from ._sync import Stream, connect_tcp

__all__ = ["AsyncTCPConnector", "TCPConnector"]


class _BaseConnector:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = 10.0,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        nodelay: bool = True,
        keepalive: Keepalive | bool | None = None,
    ) -> None:
        # Validate now, so a bad argument fails at pool construction, not at
        # the first background connect.
        self.host = host
        self.port = check_port(port, allow_zero=False)
        self.timeout = check_timeout(timeout)
        self.ssl = client_tls_context(ssl)
        check_server_hostname(server_hostname, self.ssl)
        self.server_hostname = server_hostname
        self.nodelay = nodelay
        self.keepalive = check_keepalive(keepalive)

    def _options(self) -> dict[str, Any]:
        """The keyword arguments of ``connect_tcp`` / ``connect_tcp_async`` this connector holds."""
        return {
            "timeout": self.timeout,
            "ssl": self.ssl,
            "server_hostname": self.server_hostname,
            "nodelay": self.nodelay,
            "keepalive": self.keepalive,
        }

    def __repr__(self) -> str:
        tls = " TLS" if self.ssl is not None else ""
        return f"<{type(self).__name__}{tls} {format_address(self.host, self.port)}>"


class TCPConnector(_BaseConnector):
    """Opens, closes and checks TCP connections for a :class:`connpool.Pool`.

    ``Pool(TCPConnector("db.example", 5432, ssl=True))`` makes the pool
    call :meth:`connect` to open a connection (a :class:`Stream`),
    :meth:`close` to close one and :meth:`check` at checkout.  The arguments
    are those of :func:`connect_tcp` and are validated here.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = 10.0,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        nodelay: bool = True,
        keepalive: Keepalive | bool | None = None,
        backend: object = "auto",
    ) -> None:
        super().__init__(
            host,
            port,
            timeout=timeout,
            ssl=ssl,
            server_hostname=server_hostname,
            nodelay=nodelay,
            keepalive=keepalive,
        )
        self.backend = backend

    def bind_backend(self, name: str) -> None:
        """Called by :class:`connpool.Pool`: a connector on ``"auto"`` takes the pool's backend.

        So ``Pool(TCPConnector(host, port), backend="threading")`` opens
        plain sockets even in a monkey-patched process, and a pool on gevent
        or eventlet opens that runtime's sockets.  An explicit ``backend``
        given to the connector is kept.
        """
        if self.backend == "auto" and name in ("threading", "gevent", "eventlet"):
            self.backend = name

    def connect(self) -> Stream:
        """Open a new connection (see :func:`connect_tcp` for the errors)."""
        return connect_tcp(self.host, self.port, backend=self.backend, **self._options())

    def close(self, conn: Stream) -> None:
        """Close ``conn``."""
        conn.close()

    def check(self, conn: Stream) -> bool:
        """``True`` while ``conn`` looks alive: a non-blocking probe, no round trip."""
        return not conn.is_peer_closed()


class AsyncTCPConnector(_BaseConnector):
    """Opens, closes and checks TCP connections for a :class:`connpool.AsyncPool`.

    :meth:`connect` is a coroutine returning an :class:`AsyncStream` (on the
    running asyncio or trio loop); :meth:`close` and :meth:`check` are plain
    calls that never block.  The arguments are those of
    :func:`connect_tcp_async`.
    """

    async def connect(self) -> AsyncStream:
        """Open a new connection (see :func:`connect_tcp_async` for the errors)."""
        return await connect_tcp_async(self.host, self.port, **self._options())

    def close(self, conn: AsyncStream) -> None:
        """Close ``conn`` without waiting."""
        conn.close()

    def check(self, conn: AsyncStream) -> bool:
        """``True`` while ``conn`` looks alive: a non-blocking probe, no round trip."""
        return not conn.is_peer_closed()
