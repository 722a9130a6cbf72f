"""Socket helpers shared by every runtime: validation, options, the liveness probe.

The probe (:func:`probe`) is how ``is_peer_closed()`` answers without a round
trip.  It works on any object with ``fileno()`` and ``family`` (a stdlib,
gevent, eventlet, trio or asyncio transport socket) by looking at the file
descriptor through a temporary object of the C-level ``_socket`` module, which
no monkey-patcher replaces.  That object is created non-blocking (so creating
it never changes the shared descriptor's flags, whatever
``socket.setdefaulttimeout`` says) and is detached, never closed, afterwards:

* ``recv(1, MSG_PEEK | MSG_DONTWAIT)`` returning ``b""`` means the peer sent
  FIN; ``ECONNRESET`` and other errors mean the connection is gone;
  ``EAGAIN`` means nothing is pending: the connection is alive and idle.
* When bytes are pending, Linux's ``TCP_INFO`` tells whether a FIN arrived
  behind them (the TCP state is no longer ``ESTABLISHED``).

What pending bytes mean is the caller's business: on a plain connection they
are unexpected (the protocol state is unknown), on a TLS connection they may
be harmless TLS records such as TLS 1.3 session tickets.
"""

from __future__ import annotations

import _socket
import os
import ssl as _ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Literal

Keepalive = tuple[int, int, int]

ProbeResult = Literal["idle", "closed", "data"]

_SOCK_NONBLOCK: int = getattr(_socket, "SOCK_NONBLOCK", 0)
_PEEK_FLAGS = _socket.MSG_PEEK | getattr(_socket, "MSG_DONTWAIT", 0)
_TCP_INFO: int | None = getattr(_socket, "TCP_INFO", None)
_TCP_ESTABLISHED = 1
_INET = (_socket.AF_INET, _socket.AF_INET6)
_TCP_KEEPIDLE: int | None = getattr(_socket, "TCP_KEEPIDLE", None) or getattr(_socket, "TCP_KEEPALIVE", None)
_TCP_KEEPINTVL: int | None = getattr(_socket, "TCP_KEEPINTVL", None)
_TCP_KEEPCNT: int | None = getattr(_socket, "TCP_KEEPCNT", None)

# Seconds a server gives a client to complete the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


# ------------------------------------------------------------------ validation


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """``None`` or a positive number of seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def check_port(port: int, *, allow_zero: bool) -> int:
    """A TCP port number (0 lets a server pick one)."""
    low = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise ValueError(f"port must be an integer from {low} to 65535, got {port!r}")
    return port


def check_concurrency(concurrency: int) -> int:
    """A positive number of handlers."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    return concurrency


def check_keepalive(keepalive: object) -> Keepalive | bool | None:
    """``None`` (system default), a bool (SO_KEEPALIVE on/off) or ``(idle, interval, count)``."""
    if keepalive is None or isinstance(keepalive, bool):
        return keepalive
    if not isinstance(keepalive, (tuple, list)) or len(keepalive) != 3:
        raise TypeError(
            "keepalive must be None, a bool, or a tuple (idle, interval, count) of positive integers, "
            f"got {keepalive!r}"
        )
    for label, value in zip(("idle", "interval", "count"), keepalive, strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"keepalive {label} must be a positive integer, got {value!r}")
    idle, interval, count = keepalive
    return (idle, interval, count)


def client_tls_context(ssl: _ssl.SSLContext | bool | None) -> _ssl.SSLContext | None:
    """``None``/``False``: plain TCP; ``True``: :func:`ssl.create_default_context`; or the context."""
    if ssl is None or ssl is False:
        return None
    if ssl is True:
        return _ssl.create_default_context()
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    raise TypeError(f"ssl must be an ssl.SSLContext, True, False or None, got {ssl!r}")


def server_tls_context(ssl: _ssl.SSLContext | None) -> _ssl.SSLContext | None:
    """``None`` or an :class:`ssl.SSLContext` holding the server's certificate."""
    if ssl is None:
        return None
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    raise TypeError(f"ssl must be an ssl.SSLContext with the server's certificate or None, got {ssl!r}")


def check_server_hostname(server_hostname: str | None, tls: _ssl.SSLContext | None) -> None:
    """``server_hostname`` only makes sense with TLS."""
    if server_hostname is not None and tls is None:
        raise ValueError("server_hostname is only meaningful with ssl")


# ---------------------------------------------------------------- addresses


def numeric_addrinfo(host: str, port: int) -> list[Any] | None:
    """``getaddrinfo`` for a numeric host (never blocks); ``None`` for a name that needs DNS."""
    try:
        return _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_NUMERICHOST)
    except OSError:
        return None


def listen_addrinfo(host: str | None, port: int) -> tuple[int, int, int, Any]:
    """``(family, type, proto, sockaddr)`` to bind a listening socket to."""
    infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE)
    family, type_, proto, _canonname, sockaddr = infos[0]
    return family, type_, proto, sockaddr


# ------------------------------------------------------------------ options


def configure_socket(sock: Any, *, nodelay: bool, keepalive: Keepalive | bool | None) -> None:
    """Set TCP_NODELAY and the keepalive options on this one socket (TCP only)."""
    if sock.family not in _INET:
        return
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1 if nodelay else 0)
    if keepalive is None:
        return
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1 if keepalive else 0)
    if isinstance(keepalive, tuple):
        idle, interval, count = keepalive
        for option, value in ((_TCP_KEEPIDLE, idle), (_TCP_KEEPINTVL, interval), (_TCP_KEEPCNT, count)):
            if option is not None:
                sock.setsockopt(_socket.IPPROTO_TCP, option, value)


# -------------------------------------------------------------------- probe


@contextmanager
def _fd_view(sock: Any) -> Iterator[_socket.socket | None]:
    """A non-blocking ``_socket.socket`` on ``sock``'s descriptor, detached (never closed) after use."""
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd < 0:
        yield None
        return
    # Where SOCK_NONBLOCK is missing, creating the view may make the shared
    # descriptor non-blocking (if a default timeout is set): undo that after.
    was_blocking = None if _SOCK_NONBLOCK else os.get_blocking(fd)
    try:
        raw = _socket.socket(sock.family, _socket.SOCK_STREAM | _SOCK_NONBLOCK, 0, fd)
    except OSError:
        yield None
        return
    try:
        yield raw
    finally:
        raw.detach()
        if was_blocking is not None and os.get_blocking(fd) != was_blocking:  # pragma: no cover
            os.set_blocking(fd, was_blocking)


def probe(sock: Any) -> ProbeResult:
    """Look at a connected socket without blocking and without consuming anything.

    ``"closed"``: the peer closed or reset the connection (or the socket is
    closed); ``"idle"``: nothing is pending; ``"data"``: bytes are pending and
    no FIN is known to follow them.
    """
    with _fd_view(sock) as raw:
        if raw is None:
            return "closed"
        try:
            data = raw.recv(1, _PEEK_FLAGS)
        except (BlockingIOError, InterruptedError):
            return "idle"
        except OSError:
            return "closed"
        if not data:
            return "closed"
        return "closed" if _fin_received(raw) else "data"


def _fin_received(raw: _socket.socket) -> bool:
    """Whether the kernel says the peer finished sending (Linux ``TCP_INFO``; else unknown)."""
    if _TCP_INFO is None or raw.family not in _INET:
        return False
    try:
        info = raw.getsockopt(_socket.IPPROTO_TCP, _TCP_INFO, 8)
    except OSError:
        return False
    return info[0] != _TCP_ESTABLISHED


def shutdown_fd(sock: Any) -> None:
    """``shutdown(SHUT_RDWR)`` on the descriptor, bypassing any TLS or green layer.

    Wakes up a thread or greenlet blocked reading the socket (it sees EOF)
    without closing the descriptor under its feet; its owner closes it.
    """
    with _fd_view(sock) as raw:
        if raw is not None:
            with suppress(OSError):
                raw.shutdown(_socket.SHUT_RDWR)
