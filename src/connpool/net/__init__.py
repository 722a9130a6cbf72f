"""connpool.net: TCP and TLS connections and servers for all five runtimes.

The networking layer behind :class:`connpool.Pool`'s ``TCPConnector``, the
demo, the benchmarks and the test suite.  Modelled on eventlet's
``connect``/``listen``/``serve``/``wrap_ssl``, with one API per family:

Blocking runtimes (``backend="threading" | "gevent" | "eventlet" | "auto"``)::

    stream = connect_tcp("127.0.0.1", 6379, timeout=2.0, keepalive=(60, 10, 3))
    stream.send_all(b"PING\\r\\n"); stream.receive()
    server = serve_tcp(handler, port=0, concurrency=100)   # handler(stream, address)

Async runtimes (asyncio and trio, detected with sniffio)::

    stream = await connect_tcp_async("127.0.0.1", 6379, ssl=True)
    async with serve_tcp_async(ahandler, port=0) as server: ...

Pool hooks: :class:`TCPConnector` and :class:`AsyncTCPConnector`
(``connect``, ``close``, ``check``).  An echo server lives in
:mod:`connpool.net.echo`.

gevent and eventlet use their own green sockets (``gevent.socket``,
``gevent.ssl``; ``eventlet.green.socket``, ``eventlet.green.ssl``), so they
never block the hub, monkey-patched or not.  Errors form one hierarchy under
:class:`NetError` (an :class:`OSError`).  Importing this package imports none
of gevent, eventlet or trio.
"""

from __future__ import annotations

from ._async import AsyncServer, AsyncServerStarter, AsyncStream, connect_tcp_async, serve_tcp_async
from ._connectors import AsyncTCPConnector, TCPConnector
from ._errors import ConnectRefused, ConnectTimeout, NetError, ResolveError, TLSError
from ._sync import Server, Stream, connect_tcp, serve_tcp

__all__ = [
    "AsyncServer",
    "AsyncServerStarter",
    "AsyncStream",
    "AsyncTCPConnector",
    "ConnectRefused",
    "ConnectTimeout",
    "NetError",
    "ResolveError",
    "Server",
    "Stream",
    "TCPConnector",
    "TLSError",
    "connect_tcp",
    "connect_tcp_async",
    "serve_tcp",
    "serve_tcp_async",
]
