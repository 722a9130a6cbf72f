"""Lifetime, idle, keepalive and leak rules, with a fake clock, on every backend."""

from __future__ import annotations

import logging

import pytest

from connpool import AsyncPool, Pool

from .helpers import Factory, FakeClock, await_until, wait_until


@pytest.fixture
def factory() -> Factory:
    return Factory()


# ------------------------------------------------------------------- sync


def test_max_lifetime_replaces_without_traffic(sched, factory):
    clock = FakeClock(sched)
    with Pool(factory, backend=clock, min_size=2, max_lifetime=3600) as pool:
        pool.wait(5)
        first = list(factory.made)
        clock.advance(2 * 3600)  # two hours later, nobody used the pool
        wait_until(sched, lambda: all(c.closed for c in first) and pool.stats().idle == 2)
        assert len(factory.made) == 4
        assert pool.stats().size == 2


def test_lifetime_checked_at_return(sched, factory):
    clock = FakeClock(sched)
    with Pool(factory, backend=clock, max_lifetime=60) as pool:
        conn = pool.acquire()
        clock.advance(120)
        pool.release(conn)
        wait_until(sched, lambda: conn.closed)
        assert pool.stats().size == 0


def test_max_idle_closes_above_min_size_only(sched, factory):
    clock = FakeClock(sched)
    with Pool(factory, backend=clock, min_size=1, max_size=3, max_idle=60) as pool:
        conns = [pool.acquire() for _ in range(3)]
        for conn in conns:
            pool.release(conn)
        assert pool.stats().idle == 3
        clock.advance(30)
        assert pool.stats().idle == 3
        clock.advance(3600)
        wait_until(sched, lambda: pool.stats().size == 1)
        wait_until(sched, lambda: sum(c.closed for c in conns) == 2)  # closed in the background
        assert pool.stats().closed == 2


def test_keepalive_pings_idle_and_replaces_failures(sched, factory):
    clock = FakeClock(sched)
    pinged: list = []
    broken: set = set()

    def ping(conn):
        pinged.append(conn)
        if conn in broken:
            raise ConnectionResetError("peer went away")

    with Pool(factory, backend=clock, min_size=2, ping=ping, keepalive_interval=30) as pool:
        pool.wait(5)
        a, b = factory.made
        held = pool.acquire()
        clock.advance(31)
        idle_one = b if held is a else a
        wait_until(sched, lambda: idle_one in pinged)
        assert held not in pinged  # never pinged while checked out
        pool.release(held)
        broken.add(idle_one)
        clock.advance(31)
        wait_until(sched, lambda: idle_one.closed and pool.stats().size == 2)
        assert len(factory.made) == 3  # replaced to keep min_size


def test_leak_warning_once_and_on_return(sched, factory, caplog):
    clock = FakeClock(sched)
    caplog.set_level(logging.WARNING, logger="connpool")
    with Pool(factory, backend=clock, leak_timeout=10, name="leaky") as pool:
        conn = pool.acquire()  # the leak's origin: this line must be in the report
        clock.advance(11)
        wait_until(sched, lambda: pool.stats().leaks == 1)
        clock.advance(100)
        sched.sleep(0.02)
        assert pool.stats().leaks == 1  # one warning per checkout
        records = [r.getMessage() for r in caplog.records if "leak_timeout" in r.getMessage()]
        assert len(records) == 1
        assert "test_leak_warning_once_and_on_return" in records[0]
        assert "'leaky'" in records[0]
        pool.release(conn)
        wait_until(sched, lambda: any("came back" in r.getMessage() for r in caplog.records))


# ------------------------------------------------------------------ async


@pytest.mark.anyio
async def test_async_lifetime_idle_keepalive(asched, factory):
    clock = FakeClock(asched)
    pinged: list = []

    async def ping(conn):
        pinged.append(conn)

    async with AsyncPool(
        factory.aconnect, backend=clock, min_size=1, max_size=3, max_idle=60, max_lifetime=3600,
        ping=ping, keepalive_interval=30,
    ) as pool:  # fmt: skip
        await pool.wait(5)
        conns = [await pool.acquire() for _ in range(3)]
        for conn in conns:
            pool.release(conn)
        clock.advance(31)
        await await_until(asched, lambda: len(set(pinged)) >= 3)
        clock.advance(120)
        await await_until(asched, lambda: pool.stats().size == 1)
        survivor = next(c for c in factory.made if not c.closed)
        clock.advance(4000)
        await await_until(asched, lambda: survivor.closed and pool.stats().idle == 1)


@pytest.mark.anyio
async def test_async_leak(asched, factory, caplog):
    clock = FakeClock(asched)
    caplog.set_level(logging.WARNING, logger="connpool")
    async with AsyncPool(factory.aconnect, backend=clock, leak_timeout=5) as pool:
        conn = await pool.acquire()
        clock.advance(6)
        await await_until(asched, lambda: pool.stats().leaks == 1)
        message = next(r.getMessage() for r in caplog.records if "leak_timeout" in r.getMessage())
        assert "test_async_leak" in message and "task" in message
        pool.release(conn)
