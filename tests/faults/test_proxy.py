"""The fault toolkit proves itself: each proxy mode and echo-server action does what it says.

Clients are plain blocking sockets with timeouts: the standard library's
(green ones in a monkey-patched process) and, where RST must be told from
FIN, raw ``_socket`` sockets -- eventlet's green ``recv`` reports a reset as
end of stream.  Waits poll the servers' counters; nothing sleeps for long.
"""

from __future__ import annotations

import _socket
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connpool.backends import AsyncScheduler, SyncScheduler

from ._loop import LoopError
from .echo import EchoServer
from .proxy import FaultProxy

LONG = 5.0  # a timeout that is never meant to expire
SHORT = 0.1  # a timeout that is meant to expire


def connect(address: tuple[str, int], timeout: float = LONG) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def raw_connect(address: tuple[str, int], timeout: float = LONG) -> _socket.socket:
    """A raw (never monkey-patched) blocking client socket."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def roundtrip(sock: socket.socket | _socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, f"end of stream after {received!r}"
        received += chunk
    return received


def assert_stalled(sock: socket.socket | _socket.socket, payload: bytes = b"stalled?") -> None:
    sock.sendall(payload)
    sock.settimeout(SHORT)
    with pytest.raises(TimeoutError):
        sock.recv(1)
    sock.settimeout(LONG)


def assert_reset(sock: _socket.socket) -> None:
    with pytest.raises(ConnectionResetError):
        sock.recv(1)


def assert_connection_reset(address: tuple[str, int]) -> None:
    """Connect and expect a RST; it may already arrive while ``connect()`` is completing."""
    try:
        sock = raw_connect(address)
    except ConnectionResetError:
        return
    try:
        assert_reset(sock)
    finally:
        sock.close()


def assert_eof(sock: socket.socket | _socket.socket) -> None:
    assert sock.recv(1) == b""


def assert_refused(address: tuple[str, int]) -> None:
    with pytest.raises(ConnectionRefusedError):
        connect(address).close()


def assert_connect_hangs(address: tuple[str, int]) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connect(address, timeout=SHORT).close()
    assert time.monotonic() - started >= SHORT * 0.9


# ================================================================ echo server


def test_echo_echoes_and_follows_a_half_close(echo: EchoServer) -> None:
    with connect(echo.address) as sock:
        assert roundtrip(sock, b"hello") == b"hello"
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(100):
            received += chunk
        assert received == b"last words"
    assert echo.accepted == 1
    assert echo.wait_live(0)


def test_echo_stop_closes_and_refuses_restart_reopens_the_same_port(echo: EchoServer) -> None:
    port = echo.port
    sock = connect(echo.address)
    assert roundtrip(sock) == b"ping"
    assert echo.stop() == 1
    assert not echo.running
    assert_eof(sock)
    sock.close()
    assert_refused(echo.address)
    echo.restart()
    assert echo.port == port
    with connect(echo.address) as again:
        assert roundtrip(again) == b"ping"
    assert echo.accepted == 2


def test_echo_stop_with_reset(echo: EchoServer) -> None:
    sock = raw_connect(echo.address)
    assert roundtrip(sock) == b"ping"
    assert echo.stop(reset=True) == 1
    assert_reset(sock)
    sock.close()


def test_echo_large_payload(echo: EchoServer) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the buffers, exercises back-pressure
    with connect(echo.address) as sock:
        assert roundtrip(sock, payload) == payload


# ================================================================ proxy: pass


def test_pass_through_forwards_both_ways_and_counts(echo: EchoServer, proxy: FaultProxy) -> None:
    assert proxy.mode == "pass"
    assert proxy.address == ("127.0.0.1", proxy.port)
    assert proxy.port != echo.port
    first, second = connect(proxy.address), connect(proxy.address)
    assert roundtrip(first, b"one") == b"one"
    assert roundtrip(second, b"two") == b"two"
    assert proxy.wait_accepted(2)
    assert proxy.live == 2
    assert echo.live == 2
    first.close()
    assert proxy.wait_live(1)
    assert echo.wait_live(1)
    second.close()
    assert proxy.wait_live(0)
    assert proxy.stats() == {"mode": "pass", "accepted": 2, "live": 0, "cut": 0, "upstream_failures": 0}


def test_pass_through_large_payload_and_half_close(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096
    with connect(proxy.address) as sock:
        assert roundtrip(sock, payload) == payload
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)  # the FIN travels through; the echo's FIN comes back
        assert sock.recv(10) == b"bye"
        assert_eof(sock)
    assert proxy.wait_live(0)


def test_many_concurrent_clients(proxy: FaultProxy) -> None:
    clients = [connect(proxy.address) for _ in range(40)]
    for n, sock in enumerate(clients):
        sock.sendall(b"%d;" % n)
    for n, sock in enumerate(clients):
        expected = b"%d;" % n
        assert sock.recv(len(expected)) == expected
        sock.close()
    assert proxy.accepted == 40
    assert proxy.wait_live(0)


# ================================================================ proxy: refuse


def test_refuse_then_reopen_on_the_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    existing = connect(proxy.address)
    assert roundtrip(existing) == b"ping"
    proxy.refuse()
    assert proxy.mode == "refuse"
    assert_refused(proxy.address)
    assert roundtrip(existing, b"still here") == b"still here"  # existing connections are left alone
    proxy.pass_through()
    assert proxy.port == port
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
    existing.close()
    assert proxy.accepted == 2


# ================================================================ proxy: reset / close


def test_reset_all_sends_rst_both_ways(echo: EchoServer, proxy: FaultProxy) -> None:
    clients = [raw_connect(proxy.address) for _ in range(3)]
    for sock in clients:
        assert roundtrip(sock) == b"ping"
    assert echo.live == 3
    assert proxy.reset_all() == 3
    assert proxy.live == 0
    for sock in clients:
        assert_reset(sock)
        sock.close()
    assert echo.wait_live(0)  # the server side was cut too
    assert proxy.cut == 3
    assert proxy.mode == "pass"  # a one-shot action
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"


def test_close_all_sends_fin(echo: EchoServer, proxy: FaultProxy) -> None:
    sock = raw_connect(proxy.address)
    assert roundtrip(sock) == b"ping"
    assert proxy.close_all() == 1
    assert_eof(sock)
    sock.close()
    assert echo.wait_live(0)
    assert proxy.cut == 1
    assert proxy.reset_all() == 0


def test_reset_new_and_close_new(proxy: FaultProxy) -> None:
    existing = connect(proxy.address)
    assert roundtrip(existing) == b"ping"
    proxy.reset_new()
    assert_connection_reset(proxy.address)
    proxy.close_new()
    sock = raw_connect(proxy.address)
    assert_eof(sock)
    sock.close()
    assert roundtrip(existing, b"unaffected") == b"unaffected"
    existing.close()
    assert proxy.accepted == 3
    assert proxy.cut == 2


# ================================================================ proxy: stall


def test_stall_accepts_but_forwards_nothing_until_pass_through(echo: EchoServer, proxy: FaultProxy) -> None:
    existing = connect(proxy.address)
    assert roundtrip(existing) == b"ping"
    proxy.stall()
    assert proxy.mode == "stall"
    new = connect(proxy.address)  # accepted...
    assert proxy.wait_accepted(2)
    assert_stalled(new, b"new")  # ...but nothing comes back
    assert_stalled(existing, b"old")
    proxy.pass_through()  # what waited is delivered
    assert new.recv(3) == b"new"
    assert existing.recv(3) == b"old"
    new.close()
    existing.close()
    assert proxy.wait_live(0)


# ================================================================ proxy: blackhole


def test_blackhole_connects_hang_until_pass_through(proxy: FaultProxy) -> None:
    port = proxy.port
    existing = connect(proxy.address)
    assert roundtrip(existing) == b"ping"
    proxy.blackhole()
    assert proxy.mode == "blackhole"
    assert_connect_hangs(proxy.address)
    assert_connect_hangs(proxy.address)
    assert_stalled(existing, b"held")
    assert proxy.accepted == 1  # the proxy's dummy connections are not counted
    proxy.pass_through()
    assert proxy.port == port
    with connect(proxy.address, timeout=LONG) as sock:
        assert roundtrip(sock) == b"ping"
    assert existing.recv(4) == b"held"
    existing.close()
    assert proxy.accepted == 2


def test_mode_sequence_keeps_the_port_and_ends_consistent(echo: EchoServer, proxy: FaultProxy) -> None:
    port = proxy.port
    proxy.blackhole()
    proxy.refuse()
    assert_refused(proxy.address)
    proxy.blackhole()
    assert_connect_hangs(proxy.address)
    proxy.blackhole()  # idempotent
    proxy.stall()
    with connect(proxy.address) as sock:
        assert_stalled(sock)
    proxy.refuse()
    proxy.refuse()
    proxy.reset_new()
    assert_connection_reset(proxy.address)
    proxy.pass_through()
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
    assert proxy.port == port
    assert proxy.wait_live(0)


# ================================================================ proxy and server faults


def test_upstream_down_resets_the_client_and_counts(echo: EchoServer, proxy: FaultProxy) -> None:
    echo.stop()
    assert_connection_reset(proxy.address)
    assert proxy.upstream_failures == 1
    echo.restart()
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"


def test_server_restart_behind_the_proxy(echo: EchoServer, proxy: FaultProxy) -> None:
    sock = connect(proxy.address)
    assert roundtrip(sock) == b"ping"
    echo.stop()
    assert_eof(sock)  # the server's FIN travels through the proxy
    sock.close()
    assert proxy.wait_live(0)
    echo.restart()
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"


# ================================================================ lifecycle


def test_lifecycle() -> None:
    server = EchoServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    server.start()
    proxy = FaultProxy(*server.address).start()
    with pytest.raises(RuntimeError, match="already started"):
        proxy.start()
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
    proxy.close()
    proxy.close()  # idempotent
    assert_refused(proxy.address)
    with pytest.raises(RuntimeError):
        proxy.refuse()
    server.close()
    assert_refused(server.address)
    assert "FaultProxy" in repr(proxy)
    assert "EchoServer" in repr(server)


def test_fixed_port(echo: EchoServer) -> None:
    with FaultProxy(*echo.address) as first:
        port = first.port
    with FaultProxy(*echo.address, port=port) as second:
        assert second.port == port
        with connect(second.address) as sock:
            assert roundtrip(sock) == b"ping"


# ================================================================ from every runtime


def test_used_from_tasks_of_the_runtime(sched: SyncScheduler, proxy: FaultProxy) -> None:
    """Clients in the runtime's tasks, the test waiting with the runtime's sleep: nothing blocks."""
    results = sched.queue()

    def client(n: int) -> None:
        with connect(proxy.address) as sock:
            results.put(roundtrip(sock, b"task %d" % n))

    for n in range(3):
        sched.spawn(client, n)
    assert proxy.wait_accepted(3, sleep=sched.sleep)
    assert sorted(results.get(LONG) for _ in range(3)) == [b"task 0", b"task 1", b"task 2"]
    assert proxy.wait_live(0)  # default sleep: the calling thread's runtime sleep
    proxy.blackhole()
    hung = sched.event()

    def hanging_client() -> None:
        try:
            connect(proxy.address, timeout=SHORT).close()
        except TimeoutError:
            hung.set()

    sched.spawn(hanging_client)
    assert hung.wait(LONG)


@pytest.mark.anyio
async def test_used_from_async_tasks(asched: AsyncScheduler, proxy: FaultProxy) -> None:
    import anyio

    async with await anyio.connect_tcp(*proxy.address) as stream:
        await stream.send(b"async")
        assert await stream.receive() == b"async"
        assert await proxy.wait_accepted_async(1)
        proxy.reset_all()
        with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, ConnectionResetError)):
            await stream.send(b"x")
            await stream.receive()
    proxy.refuse()
    with pytest.raises(OSError):
        await anyio.connect_tcp(*proxy.address)
    proxy.blackhole()
    with anyio.move_on_after(SHORT) as scope:
        await anyio.connect_tcp(*proxy.address)
    assert scope.cancelled_caught
    proxy.pass_through()
    async with await anyio.connect_tcp(*proxy.address) as stream:
        await stream.send(b"back")
        assert await stream.receive() == b"back"
    assert await proxy.wait_live_async(0)


def test_loop_errors_surface(echo: EchoServer) -> None:
    proxy = FaultProxy(*echo.address).start()
    with pytest.raises(ZeroDivisionError):
        proxy.call(lambda: 1 / 0)  # a failing command raises in the caller; the loop goes on
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"

    def broken() -> Iterator[Any]:
        raise RuntimeError("boom")

    proxy.interest = broken  # type: ignore[method-assign]
    proxy.call(lambda: None)  # commands run first; the loop dies right after
    with pytest.raises(LoopError, match="failed") as info:
        proxy.close()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert_refused(proxy.address)
