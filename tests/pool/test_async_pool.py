"""The pool's guarantees on the async runtimes (asyncio, trio), one test body for both."""

from __future__ import annotations

import functools

import anyio
import pytest

import testenv
from connpool import AsyncPool, PoolClosed, PoolTimeout, TooManyWaiters

from .helpers import ArmedScheduler, Factory, FakeConn, Interrupt, aassert_consistent, await_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def factory() -> Factory:
    return Factory()


def make_pool(asched, factory, **kw) -> AsyncPool:
    kw.setdefault("timeout", 5.0)
    return AsyncPool(factory.aconnect, backend=asched, **kw)


async def acquirer(pool, results, tag, *, timeout=5.0, hold=None):
    try:
        conn = await pool.acquire(timeout=timeout)
    except BaseException as exc:
        results.append((tag, exc))
        if not isinstance(exc, Exception):
            raise
        return
    results.append((tag, conn))
    if hold is not None:
        await hold.wait()
    pool.release(conn)


async def test_connection_round_trip(asched, factory):
    async with make_pool(asched, factory, max_size=2) as pool:
        async with pool.connection() as conn:
            assert isinstance(conn, FakeConn)
            assert pool.stats().in_use == 1
        async with pool.connection() as again:
            assert again is conn
        assert pool.backend == asched.name
    assert conn.closed
    assert factory.open_conns() == []


async def test_min_size_prefilled(asched, factory):
    async with make_pool(asched, factory, min_size=3, max_size=4) as pool:
        await pool.wait(5)
        assert pool.stats().idle == 3
    assert factory.open_conns() == []


async def test_fifo_hand_off_no_overtaking(asched, factory):
    async with make_pool(asched, factory, max_size=1) as pool, anyio.create_task_group() as tg:
        held = await pool.acquire()
        results: list = []
        for tag in range(4):
            tg.start_soon(acquirer, pool, results, tag)
            await await_until(asched, lambda n=tag + 1: pool.stats().waiting == n)
        pool.release(held)
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0)  # a newcomer does not overtake
        await await_until(asched, lambda: len(results) == 4)
        assert [tag for tag, _ in results] == [0, 1, 2, 3]
        assert all(conn is held for _, conn in results)


async def test_waiter_served_after_connect_failures(asched):
    factory = Factory(fail=2)
    async with make_pool(asched, factory, max_size=1) as pool:
        conn = await pool.acquire(timeout=5)
        assert factory.attempts == 3
        pool.release(conn)
        await aassert_consistent(asched, pool, factory)


async def test_discard_wakes_waiter_with_new_connection(asched, factory):
    async with make_pool(asched, factory, max_size=1) as pool, anyio.create_task_group() as tg:
        held = await pool.acquire()
        results: list = []
        tg.start_soon(acquirer, pool, results, "w")
        await await_until(asched, lambda: pool.stats().waiting == 1)
        pool.release(held, discard=True)
        await await_until(asched, lambda: results)
        assert results[0][1] is not held and isinstance(results[0][1], FakeConn)
        await await_until(asched, lambda: held.closed)


async def test_cancelled_waiter_loses_nothing(asched, factory):
    async with make_pool(asched, factory, max_size=1) as pool:
        held = await pool.acquire()
        with anyio.move_on_after(0.05) as scope:
            await pool.acquire(timeout=5)
        assert scope.cancelled_caught  # the cancellation propagated out of acquire
        assert pool.stats().waiting == 0
        pool.release(held)
        assert pool.stats().idle == 1


@pytest.mark.parametrize("first_timeout", [None, 5.0, 0.2])
async def test_waiters_time_out_on_their_own_deadlines(asched, factory, first_timeout):
    """Waiters queued with a later, no, or the same kind of deadline do not delay one another's timeout.

    The housekeeper expires deadlines that arrive in order; a waiter whose
    deadline is earlier than the one queued before it gets a timer of its own.
    """
    async with make_pool(asched, factory, max_size=1) as pool, anyio.create_task_group() as tg:
        held = await pool.acquire()
        results: list = []
        tg.start_soon(functools.partial(acquirer, pool, results, "first", timeout=first_timeout))
        await await_until(asched, lambda: pool.stats().waiting == 1)
        tg.start_soon(functools.partial(acquirer, pool, results, "second", timeout=0.1))
        with anyio.fail_after(2.0):
            await await_until(asched, lambda: any(tag == "second" for tag, _ in results))
        assert isinstance(dict(results)["second"], PoolTimeout)
        if first_timeout == 0.2:
            with anyio.fail_after(2.0):
                await await_until(asched, lambda: len(results) == 2)
            assert isinstance(dict(results)["first"], PoolTimeout)
        pool.release(held)
        await await_until(asched, lambda: len(results) == 2)
        if first_timeout != 0.2:
            assert dict(results)["first"] is held  # still waiting after the other one timed out: served
        await await_until(asched, lambda: pool.stats().in_use == 0)
        stats = pool.stats()
        assert (stats.waiting, stats.size) == (0, 1)
        assert stats.timeouts == (2 if first_timeout == 0.2 else 1)


async def test_reconnect_failed_called_once_per_outage_and_attempts_go_on(asched):
    factory = Factory(fail=-1)
    calls: list = []

    async def alert(pool):  # a coroutine function is awaited
        calls.append(pool)

    async with make_pool(asched, factory, min_size=1, reconnect_failed=alert, reconnect_timeout=0.1) as pool:
        await await_until(asched, lambda: calls)
        assert calls == [pool]
        errors = pool.stats().connect_errors
        await await_until(asched, lambda: pool.stats().connect_errors > errors + 1)  # still trying
        assert calls == [pool]  # once per outage
        factory.fail = 0  # the server is back
        await pool.wait(5)
        factory.fail = -1  # a second outage is reported again
        pool.drain()
        await await_until(asched, lambda: len(calls) == 2)


async def test_cancelled_just_after_hand_off(asched, factory):
    """Cancel a waiter right after the connection was handed to it, before it runs again."""
    async with make_pool(asched, factory, max_size=1) as pool, anyio.create_task_group() as tg:
        held = await pool.acquire()
        results: list = []
        doomed_scope = anyio.CancelScope()

        async def doomed():
            with doomed_scope:
                await acquirer(pool, results, "doomed")

        tg.start_soon(doomed)
        await await_until(asched, lambda: pool.stats().waiting == 1)
        tg.start_soon(acquirer, pool, results, "patient")
        await await_until(asched, lambda: pool.stats().waiting == 2)
        pool.release(held)  # handed to "doomed"...
        doomed_scope.cancel()  # ...which is cancelled before it could run
        await await_until(asched, lambda: any(tag == "patient" for tag, _ in results))
        await await_until(asched, lambda: pool.stats().in_use == 0)
        stats = pool.stats()
        assert (stats.size, stats.waiting) == (1, 0)
        # either doomed got it and gave it back when cancelled, or it was passed on
        assert dict(results)["patient"] is held or held.closed
        await aassert_consistent(asched, pool, factory)


async def test_interrupted_while_hand_off_in_flight(asched, factory):
    armed = ArmedScheduler(asched)
    async with AsyncPool(factory.aconnect, backend=armed, max_size=1, timeout=5) as pool:
        async with anyio.create_task_group() as tg:
            held = await pool.acquire()
            results: list = []
            armed.armed = True

            async def doomed():
                with pytest.raises(Interrupt):
                    await acquirer(pool, results, "doomed")

            tg.start_soon(doomed)
            await await_until(asched, lambda: pool.stats().waiting == 1)
            armed.armed = False
            tg.start_soon(acquirer, pool, results, "patient")
            await await_until(asched, lambda: pool.stats().waiting == 2)
            pool.release(held)
        outcome = dict(results)
        assert isinstance(outcome["doomed"], Interrupt)
        assert outcome["patient"] is held
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use, stats.waiting) == (1, 1, 0, 0)


async def test_cancellation_inside_connection_discards(asched, factory):
    async with make_pool(asched, factory) as pool:
        with anyio.CancelScope() as scope:
            async with pool.connection() as conn:
                scope.cancel()  # cancelled inside the block, once the connection is held
                await anyio.sleep(5)
        assert scope.cancelled_caught
        await await_until(asched, lambda: conn.closed)
        assert pool.stats().discarded == 1


async def test_exceptions_inside_connection(asched, factory):
    async with make_pool(asched, factory, max_size=1) as pool:
        with pytest.raises(ValueError):
            async with pool.connection() as first:
                raise ValueError("application error")
        with pytest.raises(ConnectionResetError):
            async with pool.connection() as second:
                assert second is first
                raise ConnectionResetError
        await await_until(asched, lambda: first.closed)


async def test_release_is_plain_and_reset_runs_before_reuse(asched, factory):
    gate = asched.event()
    started = asched.event()

    async def reset(conn):
        started.set()
        await gate.wait()
        conn.resets += 1

    async with make_pool(asched, factory, max_size=1, reset=reset) as pool:
        conn = await pool.acquire()
        assert pool.release(conn) is None  # a plain call
        assert await started.wait(5)
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0)
        gate.set()
        again = await pool.acquire(timeout=5)
        assert again is conn and conn.resets == 1
        pool.release(again)
        with pytest.raises(ValueError, match="not checked out"):
            pool.release(again)
        with pytest.raises(ValueError, match="not checked out"):
            pool.release(FakeConn())


async def test_pool_timeout_cannot_connect_chains_cause(asched):
    error = ConnectionRefusedError("refused by test")
    async with make_pool(asched, Factory(fail=-1, error=error)) as pool:
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            await pool.acquire(timeout=0.2)
        assert info.value.__cause__ is error


async def test_pool_timeout_busy(asched, factory):
    async with make_pool(asched, factory, max_size=1) as pool:
        held = await pool.acquire()
        with pytest.raises(PoolTimeout, match="busy") as info:
            await pool.acquire(timeout=0.02)
        assert info.value.__cause__ is None
        pool.release(held)


async def test_burst_and_max_waiting(asched, factory):
    async with make_pool(asched, factory, max_size=1, burst_limit=2, max_waiting=1) as pool:
        a = await pool.acquire()
        b = await pool.acquire(timeout=5)
        async with anyio.create_task_group() as tg:
            results: list = []
            tg.start_soon(acquirer, pool, results, "w")
            await await_until(asched, lambda: pool.stats().waiting == 1)
            with pytest.raises(TooManyWaiters):
                await pool.acquire(timeout=5)
            pool.release(a)
        assert results[0][1] is a
        pool.release(b)
        await await_until(asched, lambda: pool.stats().size == 1)


async def test_check_replaces_bad_connection(asched, factory):
    bad: set = set()

    async def check(conn):
        return conn.id not in bad

    async with make_pool(asched, factory, check=check, check_after=0) as pool:
        async with pool.connection() as first:
            pass
        bad.add(first.id)
        async with pool.connection() as conn:
            assert conn is not first
        await await_until(asched, lambda: first.closed)


async def test_resize_drain_and_stats(asched, factory):
    async with make_pool(asched, factory, min_size=2, max_size=3, name="p") as pool:
        await pool.wait(5)
        held = await pool.acquire()
        pool.drain()
        pool.release(held)
        await await_until(asched, lambda: held.closed and pool.stats().idle == 2)
        pool.resize(max_size=2, min_size=1)
        stats = pool.stats()
        assert stats.size == stats.idle + stats.in_use
        assert stats.as_dict()["name"] == "p"
        await aassert_consistent(asched, pool, factory)


async def test_close_wakes_waiters(asched, factory):
    pool = make_pool(asched, factory, max_size=1)
    results: list = []
    async with pool, anyio.create_task_group() as tg:
        held = await pool.acquire()
        tg.start_soon(acquirer, pool, results, "w")
        await await_until(asched, lambda: pool.stats().waiting == 1)
        tg.start_soon(pool.close, 5.0)
        await await_until(asched, lambda: results)
        assert isinstance(results[0][1], PoolClosed)
        with pytest.raises(PoolClosed):
            await pool.acquire()
        pool.release(held)
    assert held.closed and pool.closed


async def test_close_force_closes_after_timeout(asched, factory):
    async with make_pool(asched, factory) as pool:
        held = await pool.acquire()
        await pool.close(timeout=0.05)
        assert held.closed
        pool.release(held)  # accepted quietly
    assert factory.open_conns() == []


async def test_trio_checkpoints_on_the_fast_path(asched, factory):
    if asched.name != "trio":
        pytest.skip("trio's checkpoint rule")
    async with make_pool(asched, factory) as pool:
        await pool.wait(1)
        async with pool.connection():
            pass
        with anyio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await pool.acquire()  # even with an idle connection, acquire is a cancel point
        assert pool.stats().in_use == 0


async def test_many_tasks_nothing_lost(asched, factory):
    import random

    async with make_pool(asched, factory, max_size=3, burst_limit=4) as pool:

        async def worker(seed):
            r = random.Random(seed)
            for _ in range(30):
                with anyio.move_on_after(r.choice([0.001, 0.01, 1])):
                    try:
                        async with pool.connection(timeout=r.choice([0, 0.001, 0.05])):
                            await anyio.sleep(r.choice([0, 0, 0.001]))
                            if r.random() < 0.2:
                                raise OSError("broken")
                    except (PoolTimeout, OSError):
                        pass

        async with anyio.create_task_group() as tg:
            for seed in range(12):
                tg.start_soon(worker, seed)
        await await_until(asched, lambda: pool.stats().connecting == 0)
        stats = pool.stats()
        assert stats.waiting == 0 and stats.in_use == 0
        await aassert_consistent(asched, pool, factory)
    assert factory.open_conns() == []


@pytest.mark.skipif("trio" not in testenv.ASYNC_ENABLED, reason="trio not enabled here")
def test_trio_pool_reads_the_runs_clock():
    """On trio every time rule reads the run's clock (so ``MockClock`` applies), through the
    scheduler's bound ``clock()``: an hour-long wait and an idle expiry take no real time."""
    import time

    import trio
    import trio.testing

    from connpool.backends import get_backend

    clock = trio.testing.MockClock(autojump_threshold=0)
    factory = Factory()

    async def main() -> None:
        sched = get_backend("trio")
        async with AsyncPool(factory.aconnect, backend=sched, max_size=1, max_idle=600, timeout=3600) as pool:
            assert pool._now() == clock.current_time()
            conn = await pool.acquire()
            began = trio.current_time()
            with pytest.raises(PoolTimeout):
                await pool.acquire()  # waits the whole hour of the run's clock
            assert trio.current_time() - began >= 3600
            pool.release(conn)
            await trio.sleep(1200)  # past max_idle: the housekeeper retires it
            assert pool.stats().size == 0
            assert conn.closed

    real = time.monotonic()
    trio.run(main, clock=clock)
    assert time.monotonic() - real < 30
