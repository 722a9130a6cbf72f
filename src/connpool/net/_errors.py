"""The error hierarchy of :mod:`connpool.net` and the code that builds its messages.

Every failure to open a connection is a :class:`NetError`, itself an
:class:`OSError`, so ``except OSError`` and the pool's default
``discard_on=(OSError,)`` keep working.  Each subclass also derives from the
builtin exception it refines (``ConnectionRefusedError``, ``TimeoutError``,
``socket.gaierror``, ``ssl.SSLError``), so code written against the standard
library catches them too.  The message names ``host:port`` and the cause; the
original exception is chained as ``__cause__``.
"""

from __future__ import annotations

import socket
import ssl
import time

__all__ = [
    "ConnectRefused",
    "ConnectTimeout",
    "NetError",
    "ResolveError",
    "TLSError",
]


class NetError(OSError):
    """A network operation of :mod:`connpool.net` failed.

    ``host`` and ``port`` name the peer; ``errno`` is copied from the cause
    when it has one.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        port: int | None = None,
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConnectRefused(NetError, ConnectionRefusedError):
    """The peer actively refused the TCP connection (nothing listens on that port)."""


class ConnectTimeout(NetError, TimeoutError):
    """Connecting (DNS, TCP and TLS handshake together) took longer than ``timeout``."""


class ResolveError(NetError, socket.gaierror):
    """The host name could not be resolved (DNS failure)."""


class TLSError(NetError, ssl.SSLError):
    """The TLS handshake failed: untrusted certificate, wrong host name, protocol error."""


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class Attempt:
    """Book-keeping for one connection attempt: where it goes, its deadline, its phase.

    The phase ("resolving", "connecting to ...", "TLS handshake") ends up in
    the timeout message, so a user can tell a slow DNS from a black-holed port.
    """

    __slots__ = ("deadline", "host", "phase", "port", "timeout", "where")

    def __init__(self, host: str, port: int, timeout: float | None) -> None:
        self.host = host
        self.port = port
        self.where = format_address(host, port)
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.phase = "DNS resolution"

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline), at least a millisecond."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.001)

    def connecting_to(self, sockaddr: tuple[object, ...]) -> None:
        """Enter the TCP connect phase for one resolved address."""
        address = format_address(str(sockaddr[0]), int(str(sockaddr[1])))
        self.phase = "TCP connect" if address == self.where else f"TCP connect to {address}"

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def timeout_error(self) -> ConnectTimeout:
        """The error to raise when the deadline passed."""
        return ConnectTimeout(
            f"connecting to {self.where} timed out after {self.timeout:g}s ({self.phase})",
            host=self.host,
            port=self.port,
        )

    def resolve_error(self, cause: BaseException | None) -> ResolveError:
        """The error for a failed DNS lookup."""
        reason = _describe(cause) if cause is not None else "no address found"
        return ResolveError(
            f"cannot resolve {self.where}: {reason}",
            host=self.host,
            port=self.port,
            errno=getattr(cause, "errno", None),
        )

    def connect_error(self, errors: list[OSError]) -> NetError:
        """The error after every address failed: :class:`ConnectRefused` if any refused."""
        cause = first_connect_cause(errors)
        if isinstance(cause, ConnectionRefusedError):
            return ConnectRefused(
                f"connection to {self.where} refused: {_describe(cause)}",
                host=self.host,
                port=self.port,
                errno=cause.errno,
            )
        return NetError(
            f"cannot connect to {self.where}: {_describe(cause)}",
            host=self.host,
            port=self.port,
            errno=cause.errno,
        )

    def tls_error(self, cause: BaseException) -> TLSError:
        """The error for a failed TLS handshake."""
        return TLSError(
            f"TLS handshake with {self.where} failed: {_describe(cause)}",
            host=self.host,
            port=self.port,
            errno=getattr(cause, "errno", None),
        )


def first_connect_cause(errors: list[OSError]) -> OSError:
    """The exception to chain as ``__cause__`` of :meth:`Attempt.connect_error`."""
    refused = [exc for exc in errors if isinstance(exc, ConnectionRefusedError)]
    return refused[-1] if refused else errors[-1]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"
