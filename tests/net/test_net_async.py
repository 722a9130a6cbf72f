"""connpool.net's async API, the same bodies on asyncio and trio (anyio's pytest plugin)."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from nethelpers import TLSContexts, blackhole_port, linger_zero, open_fds, refusing_port, stalling_port

from connpool.net import (
    AsyncServer,
    AsyncStream,
    AsyncTCPConnector,
    ConnectRefused,
    ConnectTimeout,
    NetError,
    ResolveError,
    TLSError,
    connect_tcp_async,
    serve_tcp_async,
)
from connpool.net.echo import start_echo_server_async

pytestmark = pytest.mark.anyio


async def receive_exactly(stream: AsyncStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive(size - len(data))
        assert chunk, "unexpected end of stream"
        data += chunk
    return data


async def echo_once(stream: AsyncStream, payload: bytes) -> None:
    await stream.send_all(payload)
    assert await receive_exactly(stream, len(payload)) == payload


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Let the event loop run until ``predicate()`` holds (asyncio reads sockets in the background)."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)
    return predicate()


def count_tasks(anyio_backend: str) -> int:
    if anyio_backend == "trio":
        import trio

        def count(task: Any) -> int:
            return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

        return count(trio.lowlevel.current_root_task())
    import asyncio

    return len(asyncio.all_tasks())


# ------------------------------------------------------------------ round trips


async def test_echo_round_trip(anyio_backend: str) -> None:
    async with start_echo_server_async() as server:
        assert isinstance(server, AsyncServer)
        assert server.backend == anyio_backend
        assert server.address == ("127.0.0.1", server.port)
        async with await connect_tcp_async("127.0.0.1", server.port) as stream:
            assert stream.backend == anyio_backend
            assert not stream.tls
            for payload in (b"ping", b"x" * 200_000, b"\x00\xff"):
                await echo_once(stream, payload)
        assert stream.closed
    assert server.closed


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_round_trip(anyio_backend: str, tls: TLSContexts, host: str) -> None:
    async with start_echo_server_async(ssl=tls.server) as server:
        async with await connect_tcp_async(host, server.port, ssl=tls.client) as stream:
            assert stream.tls
            await echo_once(stream, b"secret")
            await echo_once(stream, b"y" * 100_000)


# ----------------------------------------------------------------------- errors


async def test_untrusted_certificate_raises_tls_error_and_leaks_nothing(
    anyio_backend: str, tls: TLSContexts
) -> None:
    async with start_echo_server_async(ssl=tls.server) as server:  # warm the loop up
        async with await connect_tcp_async("127.0.0.1", server.port, ssl=tls.client) as stream:
            await echo_once(stream, b"warm")
    before = open_fds()
    async with start_echo_server_async(ssl=tls.server) as server:
        with pytest.raises(TLSError) as info:
            await connect_tcp_async("127.0.0.1", server.port, ssl=tls.untrusting_client)
    error = info.value
    assert isinstance(error, ssl.SSLError)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert f"127.0.0.1:{server.port}" in str(error)
    # asyncio closes a failed transport's socket one loop iteration later
    assert await eventually(lambda: open_fds() == before)


async def test_refused(anyio_backend: str) -> None:
    with refusing_port() as port:
        with pytest.raises(ConnectRefused) as info:
            await connect_tcp_async("127.0.0.1", port)
    assert isinstance(info.value, ConnectionRefusedError)
    assert info.value.errno == errno.ECONNREFUSED
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert str(info.value).startswith(f"connection to 127.0.0.1:{port} refused")


async def test_unresolvable_host(anyio_backend: str) -> None:
    with pytest.raises(ResolveError) as info:
        await connect_tcp_async("nosuch.connpool.invalid", 80, timeout=30)
    assert isinstance(info.value, socket.gaierror)
    assert isinstance(info.value.__cause__, socket.gaierror)
    assert "nosuch.connpool.invalid:80" in str(info.value)


async def test_connect_timeout_on_blackholed_port(anyio_backend: str) -> None:
    with blackhole_port() as port:
        start = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            await connect_tcp_async("127.0.0.1", port, timeout=0.3)
        elapsed = time.monotonic() - start
    assert isinstance(info.value, TimeoutError)
    assert 0.25 <= elapsed < 2.0
    assert f"connecting to 127.0.0.1:{port} timed out after 0.3s" in str(info.value)


async def test_timeout_covers_tls_handshake(anyio_backend: str, tls: TLSContexts) -> None:
    with stalling_port() as port:
        start = time.monotonic()
        with pytest.raises(ConnectTimeout) as info:
            await connect_tcp_async("127.0.0.1", port, timeout=0.3, ssl=tls.client)
        elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0
    assert "TLS handshake" in str(info.value)


async def test_cancelled_connect_leaks_nothing(anyio_backend: str, tls: TLSContexts) -> None:
    before = open_fds()
    with stalling_port() as port:
        with anyio.move_on_after(0.1) as scope:
            await connect_tcp_async("127.0.0.1", port, timeout=5, ssl=tls.client)
        assert scope.cancelled_caught
    assert await eventually(lambda: open_fds() == before)


# ---------------------------------------------------------------------- options


async def test_keepalive_and_nodelay_are_set_on_the_socket(anyio_backend: str, tls: TLSContexts) -> None:
    async with start_echo_server_async() as server:
        async with await connect_tcp_async("127.0.0.1", server.port, keepalive=(30, 7, 4)) as stream:
            sock = stream.socket
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
            await echo_once(stream, b"still works")
        async with await connect_tcp_async("127.0.0.1", server.port, nodelay=False) as stream:
            assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    async with start_echo_server_async(ssl=tls.server) as server:
        async with await connect_tcp_async(
            "127.0.0.1", server.port, ssl=tls.client, keepalive=(11, 3, 2)
        ) as stream:
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2


# ----------------------------------------------------------------- peer closed


class ControlledServer:
    """A server whose handler closes, resets or writes to the connection on request."""

    def __init__(self) -> None:
        self.send, self.commands = anyio.create_memory_object_stream[Any](10)
        self.done_send, self.done = anyio.create_memory_object_stream[Any](10)
        self.server: AsyncServer | None = None

    async def handle(self, stream: AsyncStream, address: Any) -> None:
        async for command in self.commands:
            if command == "close":
                await stream.aclose()
            elif command == "reset":
                linger_zero(stream.socket)
                stream.close()
            else:
                await stream.send_all(command)
                continue
            await self.done_send.send(command)
            return

    def close(self) -> None:
        for stream in (self.send, self.commands, self.done_send, self.done):
            stream.close()

    async def do(self, command: Any) -> None:
        await self.send.send(command)
        if command in ("close", "reset"):
            with anyio.fail_after(5):
                assert await self.done.receive() == command


@pytest.fixture(params=["tcp", "tls"])
async def controlled(
    request: pytest.FixtureRequest, anyio_backend: str, tls: TLSContexts
) -> AsyncIterator[Any]:
    context = tls.server if request.param == "tls" else None
    controlled = ControlledServer()
    async with serve_tcp_async(controlled.handle, ssl=context) as server:
        controlled.server = server
        controlled.client_ssl = tls.client if context is not None else None  # type: ignore[attr-defined]
        try:
            yield controlled
        finally:
            controlled.close()


async def connect_to(controlled: Any) -> AsyncStream:
    return await connect_tcp_async("127.0.0.1", controlled.server.port, ssl=controlled.client_ssl)


async def test_live_idle_connection_is_not_peer_closed(anyio_backend: str, controlled: Any) -> None:
    async with await connect_to(controlled) as stream:
        assert not stream.is_peer_closed()
        await controlled.do(b"hello")
        assert await receive_exactly(stream, 5) == b"hello"
        for _ in range(10):
            await anyio.sleep(0)
            assert not stream.is_peer_closed()


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_peer_closed_after_server_closes(anyio_backend: str, controlled: Any, how: str) -> None:
    async with await connect_to(controlled) as stream:
        await controlled.do(b"hi")
        assert await receive_exactly(stream, 2) == b"hi"
        assert not stream.is_peer_closed()
        await controlled.do(how)
        assert await eventually(stream.is_peer_closed)
        assert stream.is_peer_closed()


async def test_unexpected_data_counts_as_not_clean_and_is_kept(anyio_backend: str) -> None:
    controlled = ControlledServer()
    async with serve_tcp_async(controlled.handle) as server:
        async with await connect_tcp_async("127.0.0.1", server.port) as stream:
            await controlled.do(b"hi")
            assert await receive_exactly(stream, 2) == b"hi"
            assert not stream.is_peer_closed()
            await controlled.do(b"surprise")
            assert await eventually(stream.is_peer_closed)
            assert await receive_exactly(stream, 8) == b"surprise"
            await controlled.do("close")
    controlled.close()


async def test_locally_closed_stream_is_peer_closed(anyio_backend: str) -> None:
    async with start_echo_server_async() as server:
        stream = await connect_tcp_async("127.0.0.1", server.port)
        stream.close()
        stream.close()
        assert stream.is_peer_closed()
        await stream.aclose()
        with pytest.raises(OSError):
            await stream.send_all(b"x")


# ----------------------------------------------------------------------- server


async def test_concurrency_limit(anyio_backend: str) -> None:
    started_send, started = anyio.create_memory_object_stream[Any](10)
    release = anyio.Event()

    async def handler(stream: AsyncStream, address: Any) -> None:
        await started_send.send(address)
        await release.wait()
        await stream.send_all(b"done")

    async with serve_tcp_async(handler, concurrency=2) as server:
        clients = [await connect_tcp_async("127.0.0.1", server.port) for _ in range(3)]
        with anyio.fail_after(5):
            await started.receive()
            await started.receive()
        with anyio.move_on_after(0.3) as scope:  # the third client waits in the backlog
            await started.receive()
        assert scope.cancelled_caught
        release.set()
        with anyio.fail_after(5):
            await started.receive()  # now it is handled
            for client in clients:
                assert await receive_exactly(client, 4) == b"done"
        for client in clients:
            await client.aclose()
    started_send.close()
    started.close()


async def test_close_stops_everything(anyio_backend: str) -> None:
    baseline = count_tasks(anyio_backend)
    started_send, started = anyio.create_memory_object_stream[Any](10)
    finished: list[Any] = []

    async def handler(stream: AsyncStream, address: Any) -> None:
        await started_send.send(address)
        try:
            while await stream.receive():
                pass
        finally:
            finished.append(address)

    async with serve_tcp_async(handler) as server:
        clients = [await connect_tcp_async("127.0.0.1", server.port) for _ in range(2)]
        with anyio.fail_after(5):
            await started.receive()
            await started.receive()
        await server.aclose()
        assert server.closed
        assert len(finished) == 2
        for client in clients:
            with anyio.fail_after(5):
                with contextlib.suppress(OSError):
                    assert await client.receive() == b""
            await client.aclose()
        with pytest.raises(ConnectRefused):
            await connect_tcp_async("127.0.0.1", server.port)
    assert count_tasks(anyio_backend) == baseline
    await server.aclose()  # idempotent
    started_send.close()
    started.close()


async def test_handler_exception_is_logged_and_server_keeps_serving(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []

    async def handler(stream: AsyncStream, address: Any) -> None:
        calls.append(address)
        if len(calls) == 1:
            raise ValueError("boom")
        await stream.send_all(b"ok")

    with caplog.at_level(logging.ERROR, logger="connpool.net"):
        async with serve_tcp_async(handler) as server:
            async with await connect_tcp_async("127.0.0.1", server.port) as first:
                with anyio.fail_after(5):
                    assert await first.receive() == b""
            async with await connect_tcp_async("127.0.0.1", server.port) as second:
                assert await receive_exactly(second, 2) == b"ok"
    records = [r for r in caplog.records if r.name == "connpool.net" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], ValueError)


async def test_tls_server_survives_a_client_that_is_not_tls(anyio_backend: str, tls: TLSContexts) -> None:
    async with start_echo_server_async(ssl=tls.server) as server:
        async with await connect_tcp_async("127.0.0.1", server.port) as plain:
            await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            with anyio.fail_after(5):
                try:
                    while await plain.receive():
                        pass
                except OSError:
                    pass
        async with await connect_tcp_async("127.0.0.1", server.port, ssl=tls.client) as stream:
            await echo_once(stream, b"fine")


async def test_awaited_server_form(anyio_backend: str) -> None:
    if anyio_backend == "trio":
        import trio

        with pytest.raises(RuntimeError, match="task_group"):
            await start_echo_server_async()
        async with trio.open_nursery() as nursery:
            server = await start_echo_server_async(task_group=nursery)
            async with await connect_tcp_async("127.0.0.1", server.port) as stream:
                await echo_once(stream, b"nursery")
            await server.aclose()
    else:
        server = await start_echo_server_async()
        async with server:
            async with await connect_tcp_async("127.0.0.1", server.port) as stream:
                await echo_once(stream, b"asyncio")
        assert server.closed


# -------------------------------------------------------------------- connector


async def test_async_tcp_connector(anyio_backend: str) -> None:
    controlled = ControlledServer()
    async with serve_tcp_async(controlled.handle) as server:
        connector = AsyncTCPConnector("127.0.0.1", server.port, timeout=5, keepalive=True)
        conn = await connector.connect()
        assert isinstance(conn, AsyncStream)
        assert conn.backend == anyio_backend
        assert conn.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert connector.check(conn)
        await controlled.do("close")
        assert await eventually(lambda: not connector.check(conn))
        connector.close(conn)
        assert conn.closed
    controlled.close()


async def test_errors_are_net_errors(anyio_backend: str) -> None:
    with refusing_port() as port:
        with pytest.raises(NetError):
            await AsyncTCPConnector("127.0.0.1", port).connect()


class _Candidate:
    """A stand-in socket for the address loop: remembers whether it was closed."""

    def __init__(self, sockaddr: tuple[str, int]) -> None:
        self.sockaddr = sockaddr
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _infos(*ports: int) -> list[Any]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)) for port in ports]


async def test_address_loop_tries_each_address_in_order_and_closes_the_failed(anyio_backend: str) -> None:
    """The loop asyncio and trio share: a refused address is closed and the next one tried;
    when none connects, the refusal is the cause; a cancellation closes the candidate."""
    from connpool.net._async import _first_connected
    from connpool.net._errors import Attempt

    made: list[_Candidate] = []
    outcomes: dict[int, BaseException | None] = {}

    def new_socket(family: int, type_: int, proto: int) -> _Candidate:
        made.append(_Candidate(("", 0)))
        return made[-1]

    async def connect(sock: _Candidate, sockaddr: tuple[str, int]) -> None:
        sock.sockaddr = sockaddr
        outcome = outcomes[sockaddr[1]]
        if outcome is not None:
            raise outcome

    outcomes.update({1: ConnectionRefusedError(errno.ECONNREFUSED, "refused"), 2: None})
    sock = await _first_connected(Attempt("db", 5432, None), _infos(1, 2), new_socket, connect)
    assert sock is made[1] and sock.sockaddr == ("127.0.0.1", 2) and not sock.closed
    assert made[0].closed

    made.clear()
    unreachable = OSError(errno.ENETUNREACH, "unreachable")
    outcomes.update({1: ConnectionRefusedError(errno.ECONNREFUSED, "refused"), 2: unreachable})
    with pytest.raises(ConnectRefused) as info:
        await _first_connected(Attempt("db", 5432, None), _infos(1, 2), new_socket, connect)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert [c.closed for c in made] == [True, True]

    made.clear()
    outcomes.update({1: KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        await _first_connected(Attempt("db", 5432, None), _infos(1, 2), new_socket, connect)
    assert [c.closed for c in made] == [True]  # closed, and the next address not tried
