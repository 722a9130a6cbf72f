"""The trio line-up: connpool, the minimal fair pool, a memory-channel pool and the deque floor.

Contended workloads run ``CONTENDED_TASKS`` tasks in a nursery; "yield once" is
``trio.lowlevel.checkpoint()``.

* trio memory-channel pool: the recipe trio users write, ``trio.open_memory_channel(max_size)``
  prefilled with ``max_size`` connections; ``receive()`` to acquire, ``send_nowait()`` to
  release. ``receive()`` always checkpoints (trio's rule), even when a connection is ready.
* No pool library targets trio directly, so "the fastest other pool" here is the recipe.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import outcome
import trio

from async_bench import deque_floor
from bench_common import CONTENDED_TASKS, MESSAGE, PoolSpec


class TrioConn:
    """A real TCP connection to the echo server: a trio ``SocketStream`` (TCP_NODELAY by default)."""

    closed = False

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    async def roundtrip(self) -> None:
        stream = self.stream
        await stream.send_all(MESSAGE)
        expected = len(MESSAGE)
        got = 0
        while got < expected:
            chunk = await stream.receive_some(expected - got)
            if not chunk:
                raise ConnectionError("echo server closed the connection")
            got += len(chunk)

    async def close(self) -> None:
        self.closed = True
        await self.stream.aclose()

    def rollback(self) -> None:
        pass


class TrioKit:
    """Workers are trio tasks in a nursery."""

    name = "trio"
    workers = CONTENDED_TASKS

    def run(self, main: Callable[[], Awaitable[Any]]) -> Any:
        return trio.run(main)

    def task_group(self) -> contextlib.AbstractAsyncContextManager[trio.Nursery]:
        return trio.open_nursery()

    def spawn(self, group: trio.Nursery, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        group.start_soon(fn, *args)

    @contextlib.asynccontextmanager
    async def fail_after(self, seconds: float) -> AsyncIterator[None]:
        with trio.fail_after(seconds):
            yield

    async def yield_once(self, _conn: Any = None) -> None:
        await trio.lowlevel.checkpoint()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def echo_server(self) -> AsyncIterator[int]:
        async def serve(stream: trio.SocketStream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async for data in stream:
                    await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
            yield listeners[0].socket.getsockname()[1]
            nursery.cancel_scope.cancel()

    async def tcp_connect(self, port: int) -> TrioConn:
        return TrioConn(await trio.open_tcp_stream("127.0.0.1", port))


KIT = TrioKit()


class MinimalFairPool:
    """The reference on trio: idle deque + FIFO of parked tasks, direct hand-off.

    ``acquire`` returns at once when a connection is idle (no checkpoint, like the asyncio
    reference); otherwise the task parks with ``wait_task_rescheduled`` and ``release``
    reschedules the oldest one with the connection. A cancelled waiter leaves the FIFO (the
    abort callback), which trio requires anyway. Connections are opened lazily up to
    ``max_size``. No timeout, no health check, no error handling.
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], max_size: int) -> None:
        self._connect = connect
        self._room = max_size
        self._idle: deque[Any] = deque()
        self._waiters: deque[trio.lowlevel.Task] = deque()

    async def acquire(self) -> Any:
        if self._idle:
            return self._idle.pop()
        if self._room:
            self._room -= 1
            return await self._connect()
        task = trio.lowlevel.current_task()
        self._waiters.append(task)

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def release(self, conn: Any) -> None:
        if self._waiters:
            trio.lowlevel.reschedule(self._waiters.popleft(), outcome.Value(conn))
        else:
            self._idle.append(conn)


# --------------------------------------------------------------------------- adapters

Connect = Callable[[], Awaitable[Any]]


@contextlib.asynccontextmanager
async def connpool_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    from connpool import AsyncPool

    async with AsyncPool(connect, backend="trio", max_size=max_size) as pool:
        yield pool.acquire, pool.release


@contextlib.asynccontextmanager
async def connpool_no_checkpoint_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    from connpool import AsyncPool

    async with AsyncPool(connect, backend="trio", max_size=max_size, checkpoint=False) as pool:
        yield pool.acquire, pool.release


@contextlib.asynccontextmanager
async def minimal_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    pool = MinimalFairPool(connect, max_size)
    yield pool.acquire, pool.release


@contextlib.asynccontextmanager
async def channel_adapter(connect: Connect, max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    send, receive = trio.open_memory_channel[Any](max_size)
    for _ in range(max_size):
        send.send_nowait(await connect())
    async with send, receive:
        yield receive.receive, send.send_nowait


POOLS = [
    PoolSpec("connpool AsyncPool(trio)", "subject", connpool_adapter, ("connpool",)),
    PoolSpec("connpool, checkpoint=False", "variant", connpool_no_checkpoint_adapter, ("connpool",)),
    PoolSpec("minimal fair pool", "reference", minimal_adapter),
    PoolSpec("trio memory-channel pool", "recipe", channel_adapter, ("trio",)),
    PoolSpec("deque floor", "floor", deque_floor, unbounded=True),
]
