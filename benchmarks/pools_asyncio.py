"""The asyncio line-up: connpool, the minimal fair pool, asyncio-connection-pool,
psycopg_pool's AsyncConnectionPool, generic-connection-pool (asyncio flavour) and the deque floor.

Contended workloads run ``CONTENDED_TASKS`` tasks; "yield once" is ``asyncio.sleep(0)``.

* asyncio-connection-pool only offers ``async with pool.get_connection()``; its adapter
  enters and exits that context manager by hand and keeps it in a dict keyed by connection
  (one dict store and pop per cycle, well under a microsecond).
* psycopg_pool runs on stand-in connections, as on threading (see ``pools_threading``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from async_bench import _close, deque_floor
from bench_common import CONTENDED_TASKS, ENDPOINT, MESSAGE, PoolSpec, psycopg_standin_base


class StreamConn:
    """A real TCP connection to the echo server: an asyncio (reader, writer) pair."""

    closed = False

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def roundtrip(self) -> None:
        self.writer.write(MESSAGE)
        await self.writer.drain()
        await self.reader.readexactly(len(MESSAGE))

    def close(self) -> None:
        self.closed = True
        self.writer.close()

    def rollback(self) -> None:
        pass


class _Tasks:
    """A minimal task group (``asyncio.TaskGroup`` needs Python 3.11)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Tasks:
        return self

    async def __aexit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                await asyncio.gather(*self.tasks)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)


class AsyncioKit:
    """Workers are asyncio tasks on the default event loop."""

    name = "asyncio"
    workers = CONTENDED_TASKS

    def run(self, main: Callable[[], Awaitable[Any]]) -> Any:
        async def runner() -> Any:
            return await main()

        return asyncio.run(runner())

    def task_group(self) -> _Tasks:
        return _Tasks()

    def spawn(self, group: _Tasks, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        group.tasks.append(asyncio.ensure_future(fn(*args)))

    def fail_after(self, seconds: float) -> contextlib.AbstractAsyncContextManager[Any]:
        timeout = getattr(asyncio, "timeout", None)  # Python 3.11+
        return timeout(seconds) if timeout else contextlib.nullcontext()

    async def yield_once(self, _conn: Any = None) -> None:
        await asyncio.sleep(0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def echo_server(self) -> AsyncIterator[int]:
        handlers: set[asyncio.Task[Any]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                with contextlib.suppress(OSError):
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                writer.close()
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            await server.wait_closed()
            if handlers:  # clients are closed by now: let the handlers see EOF and finish
                await asyncio.wait(set(handlers), timeout=5.0)

    async def tcp_connect(self, port: int) -> StreamConn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # TCP_NODELAY is asyncio's default
        return StreamConn(reader, writer)


KIT = AsyncioKit()


class MinimalFairPool:
    """The reference on asyncio: idle deque + FIFO of futures, direct hand-off.

    ``acquire`` returns at once, without yielding, when a connection is idle; otherwise it
    parks on a future that ``release`` resolves with the connection (skipping futures
    already cancelled). Connections are opened lazily up to ``max_size``. No timeout, no
    health check, no error handling.
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], max_size: int) -> None:
        self._connect = connect
        self._room = max_size
        self._idle: deque[Any] = deque()
        self._waiters: deque[asyncio.Future[Any]] = deque()

    async def acquire(self) -> Any:
        if self._idle:
            return self._idle.pop()
        if self._room:
            self._room -= 1
            return await self._connect()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def release(self, conn: Any) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)


# --------------------------------------------------------------------------- adapters

Connect = Callable[[], Awaitable[Any]]


@contextlib.asynccontextmanager
async def connpool_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    from connpool import AsyncPool

    async with AsyncPool(connect, backend="asyncio", max_size=max_size) as pool:
        yield pool.acquire, pool.release


@contextlib.asynccontextmanager
async def minimal_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    pool = MinimalFairPool(connect, max_size)
    yield pool.acquire, pool.release


@contextlib.asynccontextmanager
async def acp_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    from asyncio_connection_pool import ConnectionPool, ConnectionStrategy

    class Strategy(ConnectionStrategy[Any]):
        async def make_connection(self) -> Any:
            return await connect()

        def connection_is_closed(self, conn: Any) -> bool:
            return conn.closed

        async def close_connection(self, conn: Any) -> None:
            await _close(conn)

    pool: ConnectionPool[Any] = ConnectionPool(strategy=Strategy(), max_size=max_size)
    held: dict[Any, Any] = {}

    async def acquire() -> Any:
        manager = pool.get_connection()
        conn = await manager.__aenter__()
        held[conn] = manager
        return conn

    def release(conn: Any) -> Awaitable[Any]:
        return held.pop(conn).__aexit__(None, None, None)

    yield acquire, release


def _psycopg_standin(connect: Connect) -> type:
    """An async ``connection_class`` for psycopg_pool wrapping ``connect()``'s objects."""

    base = psycopg_standin_base()

    class StandInAsyncConnection(base):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> StandInAsyncConnection:
            return cls(await connect())

        async def close(self) -> None:
            await _close(self.raw)

        async def __aenter__(self) -> StandInAsyncConnection:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

    return StandInAsyncConnection


@contextlib.asynccontextmanager
async def psycopg_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    from psycopg_pool import AsyncConnectionPool

    pool: Any = AsyncConnectionPool(
        connection_class=_psycopg_standin(connect), min_size=max_size, max_size=max_size, open=False
    )
    await pool.open(wait=True)
    try:
        yield pool.getconn, pool.putconn
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def generic_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    from generic_connection_pool.asyncio import BaseConnectionManager, ConnectionPool

    class Manager(BaseConnectionManager[str, Any]):
        async def create(self, endpoint: str) -> Any:
            return await connect()

        async def dispose(self, endpoint: str, conn: Any) -> None:
            await _close(conn)

    pool: Any = ConnectionPool(Manager(), min_idle=max_size, max_size=max_size, total_max_size=max_size)
    try:
        yield functools.partial(pool.acquire, ENDPOINT), functools.partial(pool.release, endpoint=ENDPOINT)
    finally:
        await pool.close(timeout=1.0)


STANDIN_NOTE = "psycopg_pool with a stand-in connection_class (no database; see the module docstring)"

POOLS = [
    PoolSpec("connpool AsyncPool(asyncio)", "subject", connpool_adapter, ("connpool",)),
    PoolSpec("minimal fair pool", "reference", minimal_adapter),
    PoolSpec("asyncio-connection-pool", "library", acp_adapter, ("asyncio-connection-pool",)),
    PoolSpec(
        "psycopg_pool AsyncConnectionPool",
        "library",
        psycopg_adapter,
        ("psycopg-pool", "psycopg"),
        STANDIN_NOTE,
    ),
    PoolSpec("generic-connection-pool (asyncio)", "library", generic_adapter, ("generic-connection-pool",)),
    PoolSpec("deque floor", "floor", deque_floor, unbounded=True),
]
