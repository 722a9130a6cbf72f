"""An embedded echo server, for the demo, the benchmarks and the test suite.

Every chunk a client sends is sent back until the client closes.  Built on
:func:`connpool.net.serve_tcp` / :func:`connpool.net.serve_tcp_async`.

    >>> from connpool.net.echo import start_echo_server
    >>> with start_echo_server(backend="threading") as server:   # doctest: +SKIP
    ...     ...   # connect to ("127.0.0.1", server.port)

From a shell: ``python -m connpool.net.echo --port 7000 --backend gevent``.
"""

from __future__ import annotations

import argparse
import ssl as _ssl
from typing import Any

from ._async import AsyncServerStarter, AsyncStream, serve_tcp_async
from ._sync import Server, Stream, serve_tcp

__all__ = ["echo_handler", "echo_handler_async", "start_echo_server", "start_echo_server_async"]


def echo_handler(stream: Stream, address: Any) -> None:
    """Send every chunk back until end of stream; a broken connection just ends it."""
    try:
        while True:
            data = stream.receive()
            if not data:
                return
            stream.send_all(data)
    except OSError:
        return


async def echo_handler_async(stream: AsyncStream, address: Any) -> None:
    """The async twin of :func:`echo_handler`."""
    try:
        while True:
            data = await stream.receive()
            if not data:
                return
            await stream.send_all(data)
    except OSError:
        return


def start_echo_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    backend: object = "auto",
    ssl: _ssl.SSLContext | None = None,
    concurrency: int = 1000,
) -> Server:
    """Start an echo server in the background on a sync runtime; ``server.port`` is its port."""
    return serve_tcp(echo_handler, host, port, concurrency=concurrency, ssl=ssl, backend=backend)


def start_echo_server_async(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    concurrency: int = 1000,
    task_group: Any = None,
) -> AsyncServerStarter:
    """Start an echo server on the running asyncio or trio loop.

    Like :func:`connpool.net.serve_tcp_async`: ``await`` it (on trio with
    ``task_group=<nursery>``), or use ``async with start_echo_server_async() as server:``.
    """
    return serve_tcp_async(
        echo_handler_async, host, port, concurrency=concurrency, ssl=ssl, task_group=task_group
    )


def main(argv: list[str] | None = None) -> None:
    """Run an echo server until interrupted (``python -m connpool.net.echo``)."""
    parser = argparse.ArgumentParser(prog="python -m connpool.net.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument(
        "--backend", default="threading", choices=["threading", "gevent", "eventlet", "asyncio", "trio"]
    )
    args = parser.parse_args(argv)
    if args.backend in ("asyncio", "trio"):
        _run_async(args.backend, args.host, args.port)
        return
    server = start_echo_server(args.host, args.port, backend=args.backend)
    print(f"echo server on {server.address[0]}:{server.port} ({server.backend}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _run_async(backend: str, host: str, port: int) -> None:
    async def serve() -> None:
        async with start_echo_server_async(host, port) as server:
            print(
                f"echo server on {server.address[0]}:{server.port} ({backend}); Ctrl-C stops it", flush=True
            )
            if backend == "trio":
                import trio

                await trio.sleep_forever()
            else:
                import asyncio

                await asyncio.Event().wait()

    try:
        if backend == "trio":
            import trio

            trio.run(serve)
        else:
            import asyncio

            asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":  # pragma: no cover
    main()
