"""Self-healing under faults: ``AsyncPool`` on asyncio and trio.

The async twin of ``test_scenarios_sync.py`` (see there and
``scenario_helpers`` for what is checked): ``AsyncPool(AsyncTrackingConnector)``
-> :class:`FaultProxy` -> :class:`EchoServer`, a real echo round trip per
cycle.  Interruptions in the cancellation storm: ``acquire`` timeouts, cancel
scope deadlines (``anyio.move_on_after``: a trio cancel scope, an asyncio
task cancellation) and explicit cancels from outside (``Task.cancel()`` on
asyncio, ``CancelScope.cancel()`` on trio).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from connpool import AsyncPool, PoolTimeout
from connpool.net import AsyncStream

from ._originals import wait_until_async
from .echo import EchoServer
from .proxy import FaultProxy
from .scenario_helpers import (
    ACQUIRE_TIMEOUT,
    BACKOFF_MAX,
    CONNECT_TIMEOUT,
    LONG,
    MARGIN,
    AsyncLoad,
    AsyncTrackingConnector,
    ConnectLog,
    CyclePlan,
    Outage,
    Recovery,
    Tally,
    aassert_all_closed,
    acheck_nothing_lost,
    aecho_roundtrip,
    asettle,
    configure_backoff,
    cut_seen,
    outage_begin,
    outage_end,
    plan_storm,
    recovery_bound,
    storm_faults,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SEED = int(os.environ.get("CONNPOOL_FAULT_SEED", "20240607"))
STORM_CYCLES = int(os.environ.get("CONNPOOL_FAULT_STORM_CYCLES", "1500"))
STORM_CONCURRENCY = 16


def make_pool(
    backend: str,
    proxy: FaultProxy,
    log: ConnectLog,
    *,
    connector: AsyncTrackingConnector | None = None,
    connector_timeout: float = CONNECT_TIMEOUT,
    **kwargs: Any,
) -> AsyncPool[AsyncStream]:
    """A pool through the proxy, checking every checkout (``check_after=0``), with a short backoff."""
    if connector is None:
        connector = AsyncTrackingConnector(proxy.address, log, timeout=connector_timeout)
    kwargs.setdefault("check_after", 0)
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
    kwargs.setdefault("timeout", LONG)
    pool: AsyncPool[AsyncStream] = AsyncPool(connector, backend=backend, **kwargs)
    configure_backoff(pool)
    return pool


async def wait_for(predicate: Callable[[], bool], timeout: float = LONG) -> bool:
    return await wait_until_async(predicate, timeout, None)


# ================================================================ 1. down at start


async def test_server_down_at_start(
    anyio_backend: str,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    record_property: Callable[[str, object], None],
) -> None:
    proxy.refuse()
    async with make_pool(anyio_backend, proxy, log, min_size=2, max_size=4) as pool:
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            await pool.acquire(timeout=0.3)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 0.3 + MARGIN
        assert isinstance(info.value.__cause__, ConnectionRefusedError), repr(info.value.__cause__)
        with pytest.raises(PoolTimeout, match="cannot connect"):
            await pool.acquire(timeout=0)  # never waits
        stats = pool.stats()
        assert stats.size == 0
        assert stats.connect_errors >= 1
        assert stats.waiting == 0

        # A patient caller waits across the repair: it must not be stranded.
        recovery = Recovery()
        outcome: list[object] = []

        async def patient() -> None:
            try:
                async with pool.connection(timeout=LONG) as conn:
                    await aecho_roundtrip(conn, "patient")
            except Exception as exc:
                outcome.append(exc)
            else:
                recovery.success()
                outcome.append("served")

        async with anyio.create_task_group() as tg:
            tg.start_soon(patient)
            assert await wait_for(lambda: pool.stats().waiting == 1)
            recovery.start()
            proxy.pass_through()
        assert outcome == ["served"]
        record_property("recovery_seconds", recovery.seconds)
        assert recovery.seconds < recovery_bound(BACKOFF_MAX)
        await pool.wait(timeout=LONG)  # fills to min_size
        await acheck_nothing_lost(pool, log, proxy, echo)


# ================================================================ 2. restart under load


@pytest.mark.parametrize("outage", ["server", "proxy"])
async def test_server_restarted_under_load(
    anyio_backend: str,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    outage: Outage,
    record_property: Callable[[str, object], None],
) -> None:
    async with make_pool(anyio_backend, proxy, log, min_size=1, max_size=3) as pool:
        load = AsyncLoad(pool, workers=6, acquire_timeout=ACQUIRE_TIMEOUT)
        async with anyio.create_task_group() as tg:
            load.start(tg)
            try:
                since = time.monotonic()
                assert await wait_for(lambda: load.all_succeeded_since(since))
                down = time.monotonic()
                outage_begin(outage, echo, proxy)
                assert await wait_for(lambda: load.all_failed_since(down)), load.tally.counts
                recovery = load.recovery = Recovery()
                recovery.start()
                outage_end(outage, echo, proxy)
                every_worker = recovery_bound(BACKOFF_MAX, ACQUIRE_TIMEOUT)
                assert await wait_for(lambda: load.all_succeeded_since(recovery.started), every_worker), (
                    f"not every worker served again within {every_worker:.2f} s: {load.tally.counts}"
                )
            finally:
                await load.stop()
        record_property("recovery_seconds", recovery.seconds)
        assert recovery.seconds < recovery_bound(BACKOFF_MAX)
        assert not load.tally.unexpected, load.tally.unexpected  # only PoolTimeout and connection errors
        assert load.tally.counts["pool_timeout"] + load.tally.counts["connection_error"] > 0
        await acheck_nothing_lost(pool, log, proxy, echo)


# ================================================================ 3. cut while idle


@pytest.mark.parametrize("cut", ["reset_all", "close_all"])
async def test_connections_cut_while_idle(
    anyio_backend: str, echo: EchoServer, proxy: FaultProxy, log: ConnectLog, cut: str
) -> None:
    size = 3
    async with make_pool(anyio_backend, proxy, log, min_size=size, max_size=size) as pool:
        await pool.wait(timeout=LONG)
        idle = log.open_streams()
        assert len(idle) == size
        assert await proxy.wait_live_async(size)  # the proxy has accepted them all
        assert getattr(proxy, cut)() == size
        # The RSTs/FINs are sent; wait until the kernel has them on every idle socket.
        assert await wait_for(lambda: all(cut_seen(stream) for stream in idle))
        held = []
        try:
            for n in range(size):  # held together: every dead idle one is checked out and discarded
                conn = await pool.acquire(timeout=LONG)
                held.append(conn)
                assert all(conn is not dead for dead in idle), "a dead socket was handed out"
                await aecho_roundtrip(conn, n)
        finally:
            for conn in held:
                pool.release(conn)
        assert pool.stats().discarded == size
        assert await wait_for(lambda: all(stream.closed for stream in idle))  # closed in the background
        await acheck_nothing_lost(pool, log, proxy, echo)


# ================================================================ 4. cut while in use


@pytest.mark.parametrize("cut", ["reset_all", "close_all"])
async def test_connection_cut_while_in_use(
    anyio_backend: str, echo: EchoServer, proxy: FaultProxy, log: ConnectLog, cut: str
) -> None:
    async with make_pool(anyio_backend, proxy, log, min_size=1, max_size=2) as pool:
        await pool.wait(timeout=LONG)
        with pytest.raises(OSError):  # the cut happens inside the block
            async with pool.connection(timeout=LONG) as conn:
                await aecho_roundtrip(conn, "before")
                assert getattr(proxy, cut)() == 1
                await aecho_roundtrip(conn, "after")
        assert await wait_for(lambda: conn.closed)  # discarded, closed in the background
        stats = await asettle(pool, log)  # refilled to min_size
        assert stats.discarded == 1
        assert stats.idle == 1
        async with pool.connection(timeout=LONG) as again:
            assert again is not conn
            await aecho_roundtrip(again, "again")
        await acheck_nothing_lost(pool, log, proxy, echo)


async def test_release_of_a_connection_close_forced_is_accepted(
    anyio_backend: str, echo: EchoServer, proxy: FaultProxy, log: ConnectLog
) -> None:
    """``close(timeout)`` cuts a connection still in use; its holder, woken by the cut, gives it back.

    That happens while ``close()`` is still finishing (here: while the close hook runs, which
    waits for the holder); the release must be accepted silently, as after ``close()``.  In
    practice trio wakes a task receiving on the socket as soon as it is closed, so a request in
    flight at shutdown hits this whenever the server is slow (stalled).  Regression test:
    ``release()`` used to raise ``ValueError`` ("not checked out from this pool") here.
    """
    closed_by_pool = anyio.Event()
    released = anyio.Event()

    class SignallingConnector(AsyncTrackingConnector):
        async def close(self, conn: AsyncStream) -> None:  # type: ignore[override]
            super().close(conn)
            closed_by_pool.set()
            with anyio.move_on_after(LONG):
                await released.wait()  # the holder reacts before close() finishes

    connector = SignallingConnector(proxy.address, log, timeout=CONNECT_TIMEOUT)
    outcome: list[object] = []
    async with make_pool(anyio_backend, proxy, log, connector=connector, max_size=1) as pool:
        conn = await pool.acquire(timeout=LONG)
        await aecho_roundtrip(conn, "in use")

        async def holder() -> None:
            await closed_by_pool.wait()
            try:
                pool.release(conn)
            except Exception as exc:
                outcome.append(exc)
            else:
                outcome.append("released")
            finally:
                released.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await pool.close(timeout=0.05)
    assert outcome == ["released"]
    assert conn.closed
    await aassert_all_closed(log, proxy, echo)


# ================================================================ 5. blackholed server


async def test_blackholed_server(
    anyio_backend: str,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    record_property: Callable[[str, object], None],
) -> None:
    connect_timeout = 0.3
    proxy.blackhole()
    # The connector would let a connect hang for LONG: the pool's connect_timeout cancels it.
    pool = make_pool(
        anyio_backend, proxy, log, max_size=2, connect_timeout=connect_timeout, connector_timeout=LONG
    )
    async with pool:
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            await pool.acquire(timeout=0.8)
        elapsed = time.monotonic() - started
        assert 0.75 <= elapsed < 0.8 + MARGIN
        assert isinstance(info.value.__cause__, TimeoutError), repr(info.value.__cause__)
        # Nobody needs a connection any more: the attempt in flight ends and frees its slot.
        assert await wait_for(lambda: pool.stats().connecting == 0, connect_timeout + MARGIN)
        failed = log.failed_attempts()
        assert failed
        for seconds, error in failed:
            assert seconds < connect_timeout + 0.5, f"a connect lasted {seconds:.2f} s: {error!r}"

        recovery = Recovery()
        recovery.start()
        proxy.pass_through()
        async with pool.connection(timeout=LONG) as conn:
            await aecho_roundtrip(conn, "through")
        recovery.success()
        record_property("recovery_seconds", recovery.seconds)
        # a connect hanging when the hole closed ends within connect_timeout, then one backoff step
        assert recovery.seconds < recovery_bound(BACKOFF_MAX, connect_timeout)
        await acheck_nothing_lost(pool, log, proxy, echo)


class SlowFirstConnector(AsyncTrackingConnector):
    """Its first connect succeeds, but only after ``delay`` seconds (a slow TLS or auth handshake).

    Cancelled while slow, it closes what it opened, as ``connect_tcp_async`` does.
    """

    def __init__(self, *args: Any, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.slow = 1

    async def connect(self) -> AsyncStream:
        stream = await super().connect()
        if self.slow:
            self.slow -= 1
            try:
                await anyio.sleep(self.delay)
            except BaseException:
                stream.close()
                raise
        return stream


async def test_connect_slower_than_connect_timeout_is_not_leaked(
    anyio_backend: str, echo: EchoServer, proxy: FaultProxy, log: ConnectLog
) -> None:
    """A connect that outlasts ``connect_timeout`` is cancelled: what it opened is closed."""
    connector = SlowFirstConnector(proxy.address, log, timeout=LONG, delay=0.3)
    async with make_pool(
        anyio_backend, proxy, log, connector=connector, max_size=1, connect_timeout=0.1
    ) as pool:
        async with pool.connection(timeout=LONG) as conn:
            await aecho_roundtrip(conn, "second attempt")
        assert pool.stats().connect_errors == 1
        await asettle(pool, log, timeout=1.0)
        await acheck_nothing_lost(pool, log, proxy, echo)


# ================================================================ 6. cancellation storm


async def run_cycle(pool: AsyncPool[AsyncStream], plan: CyclePlan, tally: Tally) -> None:
    """One storm cycle: acquire (short timeout), round trip, maybe hold, release -- maybe cancelled."""
    cancelled = anyio.get_cancelled_exc_class()
    try:
        with anyio.CancelScope() as scope:
            if plan.interrupt == "deadline":
                scope.deadline = anyio.current_time() + plan.after
            async with pool.connection(timeout=plan.acquire_timeout) as conn:
                await aecho_roundtrip(conn, f"c{plan.index}")
                if plan.hold:
                    await anyio.sleep(plan.hold)
    except cancelled:
        tally.add("killed")  # cancelled from outside: never swallowed
        raise
    except BaseException as exc:
        tally.error(exc)
    else:
        tally.add("interrupted" if scope.cancelled_caught else "ok")


async def run_killed(pool: AsyncPool[AsyncStream], plan: CyclePlan, tally: Tally, backend: str) -> None:
    """Run a cycle as a task of its own and cancel it from outside after ``plan.after`` seconds."""
    if backend == "asyncio":
        import asyncio

        task = asyncio.ensure_future(run_cycle(pool, plan, tally))
        await asyncio.wait({task}, timeout=plan.after)
        task.cancel()  # Task.cancel(): a no-op if it already finished
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            tally.unexpected.append(task.exception())  # type: ignore[arg-type]
        return
    finished = anyio.Event()
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def child() -> None:
            with scope:
                await run_cycle(pool, plan, tally)
            finished.set()

        tg.start_soon(child)
        with anyio.move_on_after(plan.after):
            await finished.wait()
        scope.cancel()  # CancelScope.cancel() from another task


async def test_cancellation_storm(
    anyio_backend: str,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    record_property: Callable[[str, object], None],
) -> None:
    plans = plan_storm(random.Random(SEED), STORM_CYCLES, interruptible=True)
    tally = Tally()
    pending: Iterator[CyclePlan] = iter(plans)
    finished: list[None] = []

    async def worker() -> None:
        try:
            for plan in pending:
                if plan.interrupt == "kill":
                    await run_killed(pool, plan, tally, anyio_backend)
                else:
                    await run_cycle(pool, plan, tally)
        finally:
            finished.append(None)

    async def fault_loop(stop: anyio.Event) -> None:
        faults = storm_faults(random.Random(SEED + 1), proxy)
        try:
            for delay in faults:
                with anyio.move_on_after(delay):
                    await stop.wait()
                if stop.is_set():
                    break
        finally:
            faults.close()  # back to pass_through

    started = time.monotonic()
    async with make_pool(anyio_backend, proxy, log, min_size=2, max_size=4) as pool:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(fault_loop, stop)
            for _ in range(STORM_CONCURRENCY):
                tg.start_soon(worker)
            assert await wait_for(lambda: len(finished) == STORM_CONCURRENCY, 30.0), tally.counts
            stop.set()
        record_property("storm", dict(tally.counts))
        record_property("storm_seconds", time.monotonic() - started)
        assert not tally.unexpected, f"seed {SEED}: {tally.unexpected[:5]}"
        assert tally.total <= len(plans)
        assert tally.counts["ok"] > 0, tally.counts
        assert tally.counts["pool_timeout"] > 0, tally.counts
        assert tally.counts["interrupted"] + tally.counts["killed"] > 0, tally.counts
        await acheck_nothing_lost(pool, log, proxy, echo)
