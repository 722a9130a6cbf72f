"""connpool.net pieces that do not depend on a runtime: errors, validation, the probe, imports."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest

from connpool.net import (
    AsyncTCPConnector,
    ConnectRefused,
    ConnectTimeout,
    NetError,
    ResolveError,
    TCPConnector,
    TLSError,
    connect_tcp,
    serve_tcp,
)
from connpool.net._sockets import probe


def test_error_hierarchy() -> None:
    assert issubclass(NetError, OSError)
    for cls, builtin in [
        (ConnectRefused, ConnectionRefusedError),
        (ConnectTimeout, TimeoutError),
        (ResolveError, socket.gaierror),
        (TLSError, ssl.SSLError),
    ]:
        assert issubclass(cls, NetError)
        assert issubclass(cls, builtin)
    error = TLSError("TLS handshake with h:1 failed: nope", host="h", port=1, errno=5)
    assert str(error) == "TLS handshake with h:1 failed: nope"
    assert (error.host, error.port, error.errno) == ("h", 1, 5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"port": 0}, ValueError, "port"),
        ({"port": 70000}, ValueError, "port"),
        ({"port": "80"}, ValueError, "port"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"keepalive": (1, 2)}, TypeError, "keepalive"),
        ({"keepalive": (1, 0, 3)}, ValueError, "keepalive interval"),
        ({"ssl": "yes"}, TypeError, "ssl"),
        ({"server_hostname": "x"}, ValueError, "server_hostname"),
        ({"backend": "asyncio"}, ValueError, "connect_tcp_async"),
        ({"backend": "tornado"}, ValueError, "unknown sync backend"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    arguments: dict[str, object] = {"port": 80, **kwargs}
    port = arguments.pop("port")
    with pytest.raises(exc, match=match):
        connect_tcp("127.0.0.1", port, **arguments)  # type: ignore[arg-type]


def test_connectors_validate_at_construction() -> None:
    with pytest.raises(ValueError, match="port"):
        TCPConnector("127.0.0.1", 0)
    with pytest.raises(ValueError, match="timeout"):
        AsyncTCPConnector("127.0.0.1", 80, timeout=0)
    connector = TCPConnector("127.0.0.1", 80, ssl=True)
    assert isinstance(connector.ssl, ssl.SSLContext)
    assert repr(connector) == "<TCPConnector TLS 127.0.0.1:80>"
    assert repr(AsyncTCPConnector("::1", 80)) == "<AsyncTCPConnector [::1]:80>"


def test_server_arguments() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        serve_tcp(lambda stream, address: None, concurrency=0, backend="threading")
    with pytest.raises(TypeError, match="ssl"):
        serve_tcp(lambda stream, address: None, ssl=True, backend="threading")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler"):
        serve_tcp(None, backend="threading")  # type: ignore[arg-type]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(NetError, match="cannot listen"):
            serve_tcp(lambda stream, address: None, port=taken.getsockname()[1], backend="threading")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            yield client, server


def test_probe_states(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    assert probe(client) == "idle"
    server.sendall(b"x")
    assert client.recv(1, socket.MSG_PEEK) == b"x"  # wait until it arrived
    assert probe(client) == "data"
    assert client.recv(1) == b"x"
    server.close()
    assert client.recv(1, socket.MSG_PEEK) == b""
    assert probe(client) == "closed"
    client.close()
    assert probe(client) == "closed"


def test_probe_sees_a_fin_behind_pending_data(pair: tuple[socket.socket, socket.socket]) -> None:
    if not hasattr(socket, "TCP_INFO"):
        pytest.skip("needs TCP_INFO (Linux)")
    client, server = pair
    server.sendall(b"bye")
    server.close()
    assert client.recv(3, socket.MSG_PEEK | socket.MSG_WAITALL) == b"bye"
    assert probe(client) == "closed"


def test_probe_keeps_the_socket_mode(pair: tuple[socket.socket, socket.socket]) -> None:
    client, _server = pair
    blocking = os.get_blocking(client.fileno())  # True, unless a monkey-patched (green) socket
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(3.0)  # would make a naively wrapped descriptor non-blocking
    try:
        assert probe(client) == "idle"
    finally:
        socket.setdefaulttimeout(previous)
    assert os.get_blocking(client.fileno()) == blocking
    assert client.gettimeout() is None


def test_importing_connpool_net_imports_no_runtime() -> None:
    code = (
        "import sys, connpool.net, connpool.net.echo; "
        "loaded = [m for m in ('gevent', 'eventlet', 'trio', 'anyio') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
