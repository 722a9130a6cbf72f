"""Workloads for the async runtimes: asyncio and trio.

The same code serves both through a small *kit* (see ``AsyncKit``): how to run the main
coroutine, open a task group (``asyncio.TaskGroup`` / trio nursery), spawn into it, yield
once (``asyncio.sleep(0)`` / ``trio.lowlevel.checkpoint()``), sleep, bound a block in time,
serve TCP echo and open a TCP stream.

Each cycle of a worker is::

    t0 = perf_counter(); conn = await acquire(); t1 = perf_counter()
    await use(conn)               # yield once, or one TCP round trip
    r = release(conn)             # plain call for most pools ...
    if r is not None: await r     # ... awaited for pools whose release is a coroutine

Counting and wait recording are those of ``sync_bench`` (see ``bench_common.Contention.settle``).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from bench_common import (
    BATCH,
    MEASURE,
    POOL_SIZE,
    STOP,
    Conn,
    Connector,
    Contention,
    PoolSpec,
    Settings,
    failed,
    keep_best,
    now,
    progress,
    result,
)


class AsyncKit(Protocol):
    """What an async runtime module provides to the workloads."""

    name: str
    workers: int

    def run(self, main: Callable[[], Awaitable[Any]]) -> Any: ...
    def task_group(self) -> contextlib.AbstractAsyncContextManager[Any]: ...
    def spawn(self, group: Any, fn: Callable[..., Awaitable[None]], *args: Any) -> None: ...
    def fail_after(self, seconds: float) -> contextlib.AbstractAsyncContextManager[Any]: ...
    async def yield_once(self) -> None: ...
    async def sleep(self, seconds: float) -> None: ...
    def echo_server(self) -> contextlib.AbstractAsyncContextManager[int]: ...
    async def tcp_connect(self, port: int) -> Any: ...


class AConn(Conn):
    """The async stand-in: same as ``Conn`` (its ``close`` is a plain method)."""


async def _make_stand_in() -> AConn:
    return AConn()


@contextlib.asynccontextmanager
async def deque_floor(connect: Callable[[], Awaitable[Any]], max_size: int) -> AsyncIterator[tuple[Any, Any]]:
    """The floor on async runtimes: a prefilled deque; ``acquire`` never waits nor yields."""
    idle = deque([await connect() for _ in range(max_size)])
    pop = idle.pop

    async def acquire() -> Any:
        return pop()

    yield acquire, idle.append


# --------------------------------------------------------------------------- workloads


async def uncontended(acquire: Any, release: Any, settings: Settings) -> float:
    """One task, acquire+release back to back; returns ops/s."""

    async def batch() -> None:
        for _ in range(BATCH):
            pending = release(await acquire())
            if pending is not None:
                await pending

    end = now() + settings.warmup
    while now() < end:
        await batch()
    count = 0
    start = now()
    end = start + settings.duration
    while True:
        await batch()
        count += BATCH
        stop = now()
        if stop >= end:
            return count / (stop - start)


async def _worker(run: Contention, index: int) -> None:
    acquire, release, use = run.acquire, run.release, run.use
    perf = time.perf_counter
    record = run.waits[index].append
    count = 0
    while True:
        t0 = perf()
        conn = await acquire()
        t1 = perf()
        await use(conn)
        pending = release(conn)
        if pending is not None:
            await pending
        phase = run.phase
        if phase == MEASURE:
            count += 1
            record(t1 - t0)
        elif phase == STOP:
            break
    run.counts[index] = count
    run.last[index] = (t0, t1)


async def contended(kit: AsyncKit, run: Contention, settings: Settings) -> None:
    """``kit.workers`` tasks cycling on one pool, then ``run`` holds their figures."""
    async with kit.task_group() as group:
        for i in range(kit.workers):
            kit.spawn(group, _worker, run, i)
        await kit.sleep(settings.warmup)
        run.open_window()
        await kit.sleep(settings.duration)
        run.close_window()
    run.settle()


# --------------------------------------------------------------------------- runner


async def _io_use(conn: Any) -> None:
    await conn.roundtrip()


async def _close(conn: Any) -> None:
    closing = conn.close()
    if inspect.isawaitable(closing):
        await closing


async def _measure(
    kit: AsyncKit, spec: PoolSpec, workload: str, settings: Settings, measured: list[dict[str, Any]]
) -> dict[str, Any]:
    """Measure one pool on one workload inside the running event loop; the record also goes
    to ``measured`` as soon as it exists, before the pool is closed."""
    async with contextlib.AsyncExitStack() as stack:
        if workload == "io":
            port = await stack.enter_async_context(kit.echo_server())

            async def connect() -> Any:
                return await kit.tcp_connect(port)

            connector = Connector(connect)
        else:
            connector = Connector(_make_stand_in)
        size = POOL_SIZE
        if spec.unbounded:
            size = 1 if workload == "uncontended" else kit.workers
        deadline = settings.warmup + settings.duration + settings.hang_timeout
        try:
            async with kit.fail_after(deadline), spec.factory(connector.aconnect, size) as (acquire, release):
                if workload == "uncontended":
                    ops = await uncontended(acquire, release, settings)
                    measured.append(result(spec, workload, kit.name, ops=ops))
                else:
                    use = _io_use if workload == "io" else kit.yield_once
                    run = Contention(acquire, release, use, kit.workers)
                    await contended(kit, run, settings)
                    measured.append(run.record(spec, workload, kit.name))
            return measured[0]
        finally:
            for conn in connector.made:
                with contextlib.suppress(Exception):
                    await _close(conn)


def run_one(kit: AsyncKit, spec: PoolSpec, workload: str, settings: Settings) -> dict[str, Any]:
    """Measure one pool on one workload in a fresh event loop (with a fresh echo server for
    ``io``), so that nothing a pool leaves behind can touch the next one; never raises.

    A failure becomes the record's ``error``; one while closing the pool after a complete
    measurement keeps the figures and goes to ``teardown_error``.
    """
    measured: list[dict[str, Any]] = []
    try:
        return kit.run(lambda: _measure(kit, spec, workload, settings, measured))
    except Exception as exc:
        return failed(spec, workload, kit.name, exc, measured)


def run_runtime(kit: AsyncKit, specs: list[PoolSpec], settings: Settings) -> list[dict[str, Any]]:
    """Every workload on every pool of the line-up, in order (``settings.repeat`` rounds,
    interleaved, keeping each pool's best); returns the records."""
    records = []
    wanted = [spec for spec in specs if settings.wants(spec.name)]
    for workload in settings.workloads:
        tries: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in wanted}
        for _ in range(settings.repeat):
            for spec in wanted:
                record = run_one(kit, spec, workload, settings)
                progress(record)
                tries[spec.name].append(record)
        records += [keep_best(tries[spec.name]) for spec in wanted]
    return records
