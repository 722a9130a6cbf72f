"""connpool.net's blocking API, the same bodies on threading, gevent and eventlet."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import time
from typing import Any

import pytest
from nethelpers import (
    TLSContexts,
    blackhole_port,
    live_tasks,
    open_fds,
    refusing_port,
    reset_and_close,
    stalling_port,
    wait_readable,
)

from connpool.backends import SyncScheduler
from connpool.net import (
    ConnectRefused,
    ConnectTimeout,
    NetError,
    ResolveError,
    Stream,
    TCPConnector,
    TLSError,
    connect_tcp,
    serve_tcp,
)
from connpool.net.echo import start_echo_server


def receive_exactly(stream: Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.receive(size - len(data))
        assert chunk, "unexpected end of stream"
        data += chunk
    return data


def echo_once(stream: Stream, payload: bytes) -> None:
    stream.send_all(payload)
    assert receive_exactly(stream, len(payload)) == payload


# ------------------------------------------------------------------ round trips


def test_echo_round_trip(sync_backend: str) -> None:
    with start_echo_server(backend=sync_backend) as server:
        assert server.backend == sync_backend
        assert server.address == ("127.0.0.1", server.port)
        with connect_tcp("127.0.0.1", server.port, backend=sync_backend) as stream:
            assert stream.backend == sync_backend
            assert not stream.tls
            for payload in (b"ping", b"x" * 200_000, b"\x00\xff"):
                echo_once(stream, payload)
            stream.socket.shutdown(socket.SHUT_WR)
            assert stream.receive() == b""
        assert stream.closed


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_round_trip(sync_backend: str, tls: TLSContexts, host: str) -> None:
    with start_echo_server(backend=sync_backend, ssl=tls.server) as server:
        with connect_tcp(host, server.port, ssl=tls.client, backend=sync_backend) as stream:
            assert stream.tls
            assert stream.socket.version().startswith("TLS")
            echo_once(stream, b"secret")
            echo_once(stream, b"y" * 100_000)


def test_tls_server_hostname_is_checked(sync_backend: str, tls: TLSContexts) -> None:
    with start_echo_server(backend=sync_backend, ssl=tls.server) as server:
        with pytest.raises(TLSError) as info:
            connect_tcp(
                "127.0.0.1", server.port, ssl=tls.client, server_hostname="example.org", backend=sync_backend
            )
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


# ----------------------------------------------------------------------- errors


def test_untrusted_certificate_raises_tls_error_and_leaks_nothing(
    sync_backend: str, tls: TLSContexts
) -> None:
    with start_echo_server(backend=sync_backend, ssl=tls.server) as server:  # warm the runtime up
        with connect_tcp("127.0.0.1", server.port, ssl=tls.client, backend=sync_backend) as stream:
            echo_once(stream, b"warm")
    before = open_fds()
    with start_echo_server(backend=sync_backend, ssl=tls.server) as server:
        with pytest.raises(TLSError) as info:
            connect_tcp("127.0.0.1", server.port, ssl=tls.untrusting_client, backend=sync_backend)
    error = info.value
    assert isinstance(error, NetError)
    assert isinstance(error, ssl.SSLError)
    assert isinstance(error, OSError)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert f"127.0.0.1:{server.port}" in str(error)
    assert "certificate verify failed" in str(error)
    assert (error.host, error.port) == ("127.0.0.1", server.port)
    assert open_fds() == before


def test_refused(sync_backend: str) -> None:
    with refusing_port() as port:
        with pytest.raises(ConnectRefused) as info:
            connect_tcp("127.0.0.1", port, backend=sync_backend)
    error = info.value
    assert isinstance(error, ConnectionRefusedError)
    assert isinstance(error, NetError)
    assert error.errno == errno.ECONNREFUSED
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert str(error).startswith(f"connection to 127.0.0.1:{port} refused")


def test_unresolvable_host(sync_backend: str) -> None:
    with pytest.raises(ResolveError) as info:
        connect_tcp("nosuch.connpool.invalid", 80, timeout=30, backend=sync_backend)
    assert isinstance(info.value, socket.gaierror)
    assert isinstance(info.value.__cause__, socket.gaierror)
    assert "nosuch.connpool.invalid:80" in str(info.value)


def test_connect_timeout_on_blackholed_port(sync_backend: str) -> None:
    with blackhole_port() as port:
        start = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            connect_tcp("127.0.0.1", port, timeout=0.3, backend=sync_backend)
        elapsed = time.monotonic() - start
    assert isinstance(info.value, TimeoutError)
    assert 0.25 <= elapsed < 2.0
    assert f"connecting to 127.0.0.1:{port} timed out after 0.3s" in str(info.value)


def test_timeout_covers_tls_handshake(sync_backend: str, tls: TLSContexts) -> None:
    with stalling_port() as port:
        start = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            connect_tcp("127.0.0.1", port, timeout=0.3, ssl=tls.client, backend=sync_backend)
        elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0
    assert "TLS handshake" in str(info.value)


def test_waiting_connect_lets_other_tasks_run(
    sync_backend: str, sched: SyncScheduler, tls: TLSContexts
) -> None:
    """A green connect never blocks the hub, even without monkey-patching."""
    ticks = []
    stop = sched.event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            sched.sleep(0.01)

    task = sched.spawn(ticker)
    try:
        with stalling_port() as port, pytest.raises(ConnectTimeout):
            connect_tcp("127.0.0.1", port, timeout=0.3, ssl=tls.client, backend=sync_backend)
    finally:
        stop.set()
        assert task.join(5)
    assert len(ticks) >= 5


# ---------------------------------------------------------------------- options


def test_keepalive_and_nodelay_are_set_on_the_socket(sync_backend: str) -> None:
    with start_echo_server(backend=sync_backend) as server:
        with connect_tcp("127.0.0.1", server.port, keepalive=(30, 7, 4), backend=sync_backend) as stream:
            sock = stream.socket
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
            echo_once(stream, b"still works")
        with connect_tcp("127.0.0.1", server.port, nodelay=False, backend=sync_backend) as stream:
            sock = stream.socket
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_keepalive_on_tls_socket(sync_backend: str, tls: TLSContexts) -> None:
    with start_echo_server(backend=sync_backend, ssl=tls.server) as server:
        with connect_tcp(
            "127.0.0.1", server.port, ssl=tls.client, keepalive=(11, 3, 2), backend=sync_backend
        ) as stream:
            assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2


# ----------------------------------------------------------------- peer closed


class ControlledServer:
    """A server whose handler closes, resets or writes to the connection on request."""

    def __init__(self, sched: SyncScheduler, backend: str, context: ssl.SSLContext | None) -> None:
        self.backend = backend
        self.commands = sched.queue()
        self.done = sched.queue()
        self.server = serve_tcp(self.handle, ssl=context, backend=backend)

    def handle(self, stream: Stream, address: Any) -> None:
        while True:
            command = self.commands.get()
            if command == "close":
                stream.close()
            elif command == "reset":
                reset_and_close(stream.socket)
            else:
                stream.send_all(command)
                continue
            self.done.put(command)
            return

    def do(self, command: Any) -> None:
        self.commands.put(command)
        if command in ("close", "reset"):
            assert self.done.get(timeout=5) == command


@pytest.fixture(params=["tcp", "tls"])
def controlled(
    request: pytest.FixtureRequest, sync_backend: str, sched: SyncScheduler, tls: TLSContexts
) -> Any:
    context = tls.server if request.param == "tls" else None
    controlled = ControlledServer(sched, sync_backend, context)
    controlled.client_ssl = tls.client if context is not None else None  # type: ignore[attr-defined]
    yield controlled
    controlled.commands.put("close")  # let a handler still waiting for a command finish
    controlled.server.close()


def connect_to(controlled: Any, backend: str) -> Stream:
    return connect_tcp("127.0.0.1", controlled.server.port, ssl=controlled.client_ssl, backend=backend)


def test_live_idle_connection_is_not_peer_closed(sync_backend: str, controlled: Any) -> None:
    with connect_to(controlled, sync_backend) as stream:
        assert not stream.is_peer_closed()
        if stream.tls:
            # TLS 1.3 session tickets are pending right after the handshake:
            # they are records, not data, and must not count.
            assert wait_readable(controlled.backend, stream.socket)
        assert not stream.is_peer_closed()
        controlled.do(b"hello")
        assert receive_exactly(stream, 5) == b"hello"
        assert not stream.is_peer_closed()
        assert not stream.is_peer_closed()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_peer_closed_after_server_closes(sync_backend: str, controlled: Any, how: str) -> None:
    with connect_to(controlled, sync_backend) as stream:
        controlled.do(b"hi")
        assert receive_exactly(stream, 2) == b"hi"
        assert not stream.is_peer_closed()
        controlled.do(how)
        assert wait_readable(controlled.backend, stream.socket)
        assert stream.is_peer_closed()
        assert stream.is_peer_closed()


def test_unexpected_data_counts_as_not_clean_and_is_kept(sync_backend: str, controlled: Any) -> None:
    with connect_to(controlled, sync_backend) as stream:
        controlled.do(b"hi")
        assert receive_exactly(stream, 2) == b"hi"
        controlled.do(b"surprise")
        assert wait_readable(controlled.backend, stream.socket)
        assert stream.is_peer_closed()
        assert receive_exactly(stream, 8) == b"surprise"


def test_locally_closed_stream_is_peer_closed(sync_backend: str) -> None:
    with start_echo_server(backend=sync_backend) as server:
        stream = connect_tcp("127.0.0.1", server.port, backend=sync_backend)
        stream.close()
        stream.close()
        assert stream.is_peer_closed()


# ----------------------------------------------------------------------- server


def test_concurrency_limit(sync_backend: str, sched: SyncScheduler) -> None:
    started = sched.queue()
    release = sched.event()

    def handler(stream: Stream, address: Any) -> None:
        started.put(address)
        release.wait(10)
        stream.send_all(b"done")

    with serve_tcp(handler, concurrency=2, backend=sync_backend) as server:
        clients = [connect_tcp("127.0.0.1", server.port, backend=sync_backend) for _ in range(3)]
        try:
            started.get(timeout=5)
            started.get(timeout=5)
            with pytest.raises(TimeoutError):  # the third client waits in the backlog
                started.get(timeout=0.3)
            release.set()
            started.get(timeout=5)  # now it is handled
            for client in clients:
                assert receive_exactly(client, 4) == b"done"
        finally:
            release.set()
            for client in clients:
                client.close()


def test_close_stops_everything(sync_backend: str, sched: SyncScheduler) -> None:
    baseline = live_tasks(sync_backend)
    started = sched.queue()
    finished = sched.queue()

    def handler(stream: Stream, address: Any) -> None:
        started.put(address)
        try:
            while stream.receive():
                pass
        except OSError:
            pass
        finally:
            finished.put(address)

    server = serve_tcp(handler, backend=sync_backend)
    clients = [connect_tcp("127.0.0.1", server.port, backend=sync_backend) for _ in range(2)]
    started.get(timeout=5)
    started.get(timeout=5)
    server.close()
    assert server.closed
    finished.get(timeout=0)  # close() joined both handlers
    finished.get(timeout=0)
    for client in clients:
        with contextlib.suppress(OSError):
            assert client.receive() == b""
        client.close()
    with pytest.raises(ConnectRefused):
        connect_tcp("127.0.0.1", server.port, backend=sync_backend)
    assert live_tasks(sync_backend) == baseline
    server.close()  # idempotent


def test_close_with_a_handler_that_ignores_eof(
    sync_backend: str, sched: SyncScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    baseline = live_tasks(sync_backend)
    started = sched.event()
    never = sched.event()
    finished = sched.event()

    def handler(stream: Stream, address: Any) -> None:
        started.set()
        try:
            never.wait(10)
        finally:
            finished.set()

    server = serve_tcp(handler, backend=sync_backend)
    client = connect_tcp("127.0.0.1", server.port, backend=sync_backend)
    assert started.wait(5)
    with caplog.at_level(logging.WARNING, logger="connpool.net"):
        server.close(timeout=0.2)
    if sync_backend == "threading":
        # A thread cannot be killed: close() says so, and the thread ends later.
        assert "still running after close()" in caplog.text
        never.set()
    assert finished.wait(5)
    client.close()
    if sync_backend != "threading":
        assert live_tasks(sync_backend) == baseline


def test_handler_exception_is_logged_and_server_keeps_serving(
    sync_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def handler(stream: Stream, address: Any) -> None:
        calls.append(address)
        if len(calls) == 1:
            raise ValueError("boom")
        stream.send_all(b"ok")

    with caplog.at_level(logging.ERROR, logger="connpool.net"):
        with serve_tcp(handler, backend=sync_backend) as server:
            with connect_tcp("127.0.0.1", server.port, backend=sync_backend) as first:
                assert first.receive() == b""  # the handler's stream was closed
            with connect_tcp("127.0.0.1", server.port, backend=sync_backend) as second:
                assert receive_exactly(second, 2) == b"ok"
    records = [r for r in caplog.records if r.name == "connpool.net" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], ValueError)
    assert "handler" in records[0].getMessage()


def test_tls_server_survives_a_client_that_is_not_tls(sync_backend: str, tls: TLSContexts) -> None:
    with start_echo_server(backend=sync_backend, ssl=tls.server) as server:
        with connect_tcp("127.0.0.1", server.port, backend=sync_backend) as plain:
            plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            try:
                while plain.receive():
                    pass
            except OSError:
                pass
        with connect_tcp("127.0.0.1", server.port, ssl=tls.client, backend=sync_backend) as stream:
            echo_once(stream, b"fine")


def test_close_from_inside_a_handler(sync_backend: str, sched: SyncScheduler) -> None:
    servers: list[Any] = []
    done = sched.event()

    def handler(stream: Stream, address: Any) -> None:
        servers[0].close()
        done.set()

    server = serve_tcp(handler, backend=sync_backend)
    servers.append(server)
    with connect_tcp("127.0.0.1", server.port, backend=sync_backend):
        assert done.wait(5)
    assert server.closed


# -------------------------------------------------------------------- connector


def test_tcp_connector(sync_backend: str, sched: SyncScheduler) -> None:
    closing = sched.event()
    closed = sched.event()

    def handler(stream: Stream, address: Any) -> None:
        closing.wait(10)
        stream.close()
        closed.set()

    with serve_tcp(handler, backend=sync_backend) as server:
        connector = TCPConnector(
            "127.0.0.1", server.port, timeout=5, keepalive=(60, 10, 3), backend=sync_backend
        )
        conn = connector.connect()
        assert isinstance(conn, Stream)
        assert conn.backend == sync_backend
        assert connector.check(conn)
        closing.set()
        assert closed.wait(5)
        assert wait_readable(sync_backend, conn.socket)
        assert not connector.check(conn)
        connector.close(conn)
        assert conn.closed
    assert "127.0.0.1" in repr(connector)


def test_auto_backend_is_the_detected_one() -> None:
    from connpool.backends import detect_sync_backend

    with start_echo_server() as server:
        assert server.backend == detect_sync_backend()
        with connect_tcp("127.0.0.1", server.port) as stream:
            assert stream.backend == detect_sync_backend()
            echo_once(stream, b"auto")
