"""connpool.net connectors driving real pools: Pool(TCPConnector) and AsyncPool(AsyncTCPConnector)."""

from __future__ import annotations

import anyio
import pytest
from nethelpers import wait_readable

from connpool import AsyncPool, Pool
from connpool.net import AsyncStream, AsyncTCPConnector, Stream, TCPConnector
from connpool.net.echo import start_echo_server, start_echo_server_async


def echo_once(stream: Stream, payload: bytes) -> None:
    stream.send_all(payload)
    data = b""
    while len(data) < len(payload):
        chunk = stream.receive()
        assert chunk
        data += chunk
    assert data == payload


def test_pool_replaces_a_connection_the_server_closed(sync_backend: str) -> None:
    server = start_echo_server(backend=sync_backend)
    port = server.port
    connector = TCPConnector("127.0.0.1", port, timeout=5, backend=sync_backend)
    with Pool(connector, backend=sync_backend, max_size=2, check_after=0) as pool:
        with pool.connection() as first:
            echo_once(first, b"one")
        server.close()  # closes the server side of the idle pooled connection
        assert wait_readable(sync_backend, first.socket)
        server = start_echo_server(port=port, backend=sync_backend)
        try:
            with pool.connection() as second:
                assert second is not first  # the check saw the dead one and the pool replaced it
                echo_once(second, b"two")
            assert pool.stats().discarded == 1
        finally:
            server.close()
    # A discarded connection is closed by the pool's background workers, off
    # the caller's path; closing the pool runs the jobs it still holds first.
    assert first.closed


def test_pool_gives_its_backend_to_an_auto_connector(sync_backend: str) -> None:
    server = start_echo_server(backend=sync_backend)
    try:
        connector = TCPConnector("127.0.0.1", server.port, timeout=5)  # backend="auto"
        with Pool(connector, backend=sync_backend, max_size=1) as pool:
            assert connector.backend == sync_backend
            with pool.connection() as stream:
                echo_once(stream, b"bound")
        explicit = TCPConnector("127.0.0.1", server.port, timeout=5, backend="threading")
        with Pool(explicit, backend=sync_backend, max_size=1):
            assert explicit.backend == "threading"  # an explicit choice is kept
    finally:
        server.close()


@pytest.mark.anyio
async def test_async_pool_replaces_a_connection_the_server_closed(anyio_backend: str) -> None:
    async with start_echo_server_async() as server:
        port = server.port
        connector = AsyncTCPConnector("127.0.0.1", port, timeout=5)
        async with AsyncPool(connector, max_size=2, check_after=0) as pool:
            async with pool.connection() as first:
                assert isinstance(first, AsyncStream)
                await first.send_all(b"one")
                assert await first.receive() == b"one"
            await server.aclose()
            with anyio.fail_after(5):
                while not first.is_peer_closed():
                    await anyio.sleep(0.001)
            async with start_echo_server_async(port=port):
                async with pool.connection() as second:
                    assert second is not first
                    await second.send_all(b"two")
                    assert await second.receive() == b"two"
                assert pool.stats().discarded == 1
        assert first.closed  # discarded, closed in the background; closing the pool runs its jobs
