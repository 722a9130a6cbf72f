"""Helpers for the connpool.net tests: TLS material, runtime primitives, local fault servers.

Only 127.0.0.1 is ever contacted.  Certificates are made at test time with
``trustme`` (a throw-away CA, a server certificate for ``localhost`` and
``127.0.0.1``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class TLSContexts:
    """A server context, a client context trusting its CA, and one that does not."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    untrusting_client: ssl.SSLContext


def make_tls_contexts() -> TLSContexts:
    """Fresh contexts around a throw-away CA made now with trustme."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    other_ca = trustme.CA()
    untrusting = ssl.create_default_context()
    other_ca.configure_trust(untrusting)
    return TLSContexts(server=server, client=client, untrusting_client=untrusting)


# --------------------------------------------------------------- sync runtimes


def wait_readable(backend: str, sock: Any, timeout: float = 5.0) -> bool:
    """Wait until ``sock``'s descriptor is readable (data, FIN or reset) without blocking a hub."""
    if backend == "gevent":
        import gevent.select

        readable, _, _ = gevent.select.select([sock.fileno()], [], [], timeout)
    elif backend == "eventlet":
        import eventlet.green.select

        readable, _, _ = eventlet.green.select.select([sock.fileno()], [], [], timeout)
    else:
        readable, _, _ = select.select([sock.fileno()], [], [], timeout)
    return bool(readable)


def live_tasks(backend: str) -> int:
    """Threads alive (threading) or greenlets not finished (gevent, eventlet)."""
    if backend == "threading":
        return threading.active_count()
    if backend == "gevent":
        import gevent

        kind: Any = gevent.Greenlet
    else:
        import eventlet.greenthread

        kind = eventlet.greenthread.GreenThread
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind) and not obj.dead)


# ------------------------------------------------------------------- sockets


def open_fds() -> int:
    """Number of open file descriptors of this process (Linux)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    gc.collect()  # sockets of earlier tests that only the garbage collector closes
    return len(os.listdir("/proc/self/fd"))


def linger_zero(sock: Any) -> None:
    """Set SO_LINGER 0 on ``sock``: closing it sends the peer a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_and_close(sock: Any) -> None:
    """Close ``sock`` so that the peer gets a RST."""
    linger_zero(sock)
    sock.close()


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port with a bound socket that does not listen: connecting is refused, no race."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def blackhole_port() -> Iterator[int]:
    """A port whose SYNs are dropped: a backlog-0 listener whose accept queue is full."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            yield port


@contextlib.contextmanager
def stalling_port() -> Iterator[int]:
    """A port that completes the TCP handshake (kernel backlog) but never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]
