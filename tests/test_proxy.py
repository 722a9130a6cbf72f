"""connpool's Proxy: one connection per thread, greenlet or task, returned when its owner ends."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from connpool import AsyncPool, Pool
from connpool._proxy import SCOPES, Proxy
from connpool.backends import BackendUnavailable

N = 100
LONG = 10.0


class Conn:
    """A stand-in connection with a few attributes and dunders to forward to."""

    def __init__(self) -> None:
        self.closed = False
        self.data: dict[str, int] = {}
        self.flag = 0

    def ident(self) -> int:
        return id(self)

    def close(self) -> None:
        self.closed = True

    def __getitem__(self, key: str) -> int:
        return self.data[key]

    def __setitem__(self, key: str, value: int) -> None:
        self.data[key] = value


async def aconnect() -> Conn:
    return Conn()


def wait_until(sleep: Callable[[float], None], predicate: Callable[[], bool], what: str = "") -> None:
    deadline = time.monotonic() + LONG
    while not predicate():
        assert time.monotonic() < deadline, f"condition not reached: {what}"
        sleep(0.002)


def all_back(pool: Any, size: int) -> bool:
    stats = pool.stats()
    return stats.in_use == 0 and stats.idle == size == stats.size


def green_scope(sched: Any) -> str:
    return "thread" if sched.name == "threading" else "greenlet"


# ------------------------------------------------------- thread / greenlet


def test_each_worker_has_its_own_connection_returned_at_its_end(sched):
    """100 threads (or greenlets) each see their own connection, all back after they end."""
    with Pool(Conn, backend=sched, max_size=N, timeout=LONG) as pool:
        proxy: Proxy[Conn] = Proxy(pool, scope=green_scope(sched))
        seen: list[int] = []
        everyone_in = sched.event()

        def worker() -> None:
            mine = proxy.ident()
            seen.append(mine)
            if len(seen) == N:
                everyone_in.set()
            assert everyone_in.wait(LONG)
            assert proxy.ident() == mine  # still the same one after everybody got theirs

        handles = [sched.spawn(worker) for _ in range(N)]
        for handle in handles:
            assert handle.join(LONG)
        assert len(seen) == N
        assert len(set(seen)) == N  # distinct while they all ran at once
        wait_until(sched.sleep, lambda: all_back(pool, N), "every connection back, no release() called")
        stats = pool.stats()
        assert stats.discarded == 0
        assert stats.waiting == 0


def test_same_connection_for_every_access_in_one_worker(sched):
    with Pool(Conn, backend=sched, max_size=4) as pool:
        proxy: Proxy[Conn] = Proxy(pool, scope=green_scope(sched))
        results: list[tuple[int, int, int]] = []

        def worker() -> None:
            first = proxy.ident()
            proxy.flag = 7  # forwarded to the connection
            results.append((first, proxy.ident(), proxy.acquire().flag))

        handle = sched.spawn(worker)
        assert handle.join(LONG)
        first, second, flag = results[0]
        assert first == second
        assert flag == 7
        wait_until(sched.sleep, lambda: all_back(pool, 1))


def test_explicit_release_and_discard(sched):
    with Pool(Conn, backend=sched, max_size=2) as pool:
        proxy: Proxy[Conn] = Proxy(pool, scope=green_scope(sched))
        done = sched.event()

        def worker() -> None:
            a = proxy.acquire()
            proxy.release()
            assert pool.stats().in_use == 0
            proxy.release()  # nothing held: no-op
            b = proxy.acquire()
            assert b is a  # LIFO: the same one comes back
            proxy.release(discard=True)
            assert b.closed or pool.stats().discarded == 1
            c = proxy.acquire()
            assert c is not b
            done.set()

        handle = sched.spawn(worker)
        assert handle.join(LONG)
        assert done.is_set()
        wait_until(sched.sleep, lambda: all_back(pool, 1))
        assert pool.stats().discarded == 1


def test_with_block_returns_the_connection(sched):
    with Pool(Conn, backend=sched, max_size=2) as pool:
        proxy: Proxy[Conn] = Proxy(pool, scope=green_scope(sched))
        out: list[bool] = []

        def worker() -> None:
            with proxy as conn:
                with proxy as inner:  # nested: the outermost block releases
                    assert inner is conn
                out.append(pool.stats().in_use == 1)
                assert proxy.ident() == id(conn)
            out.append(pool.stats().in_use == 0)
            with pytest.raises(OSError), proxy:  # an OSError discards (the pool's discard_on)
                raise OSError("broken")
            out.append(pool.stats().discarded == 1)

        handle = sched.spawn(worker)
        assert handle.join(LONG)
        assert out == [True, True, True]


def test_worker_ending_with_an_exception_returns_the_connection(sched):
    with Pool(Conn, backend=sched, max_size=2) as pool:
        proxy: Proxy[Conn] = Proxy(pool, scope=green_scope(sched))

        def worker() -> None:
            proxy.ident()
            raise ValueError("application error (logged by the scheduler)")

        handle = sched.spawn(worker)
        assert handle.join(LONG)
        wait_until(sched.sleep, lambda: all_back(pool, 1))
        assert pool.stats().discarded == 0


def test_killed_greenlet_discards_its_connection(sched):
    if sched.name == "threading":
        pytest.skip("threads cannot be killed")
    with Pool(Conn, backend=sched, max_size=2) as pool:
        proxy: Proxy[Conn] = Proxy(pool, scope="greenlet")
        started = sched.event()

        def worker() -> None:
            proxy.ident()
            started.set()
            sched.sleep(LONG)

        if sched.name == "gevent":
            import gevent

            greenlet: Any = gevent.spawn(worker)
        else:
            import eventlet

            greenlet = eventlet.spawn(worker)
        assert started.wait(LONG)
        greenlet.kill()
        wait_until(sched.sleep, lambda: pool.stats().discarded == 1, "killed mid-use: state unknown")
        assert pool.stats().in_use == 0


def test_thread_scope_in_the_main_thread_until_release():
    with Pool(Conn, backend="threading", max_size=2) as pool:
        proxy: Proxy[Conn] = Proxy(pool)
        assert proxy.scope == "thread"
        assert proxy.pool is pool
        a = proxy.acquire()
        assert proxy.ident() == id(a)
        assert pool.stats().in_use == 1
        proxy.release()
        assert pool.stats().in_use == 0


def test_proxy_garbage_collected_returns_its_connections():
    with Pool(Conn, backend="threading", max_size=2) as pool:
        proxy: Proxy[Conn] = Proxy(pool)
        proxy.ident()
        assert pool.stats().in_use == 1
        del proxy
        gc.collect()
        assert pool.stats().in_use == 0


# -------------------------------------------------------------------- shared


def test_shared_scope_one_connection_for_all_threads():
    with Pool(Conn, backend="threading", max_size=4) as pool:
        proxy: Proxy[Conn] = Proxy(pool, scope="shared")
        seen: list[int] = []
        threads = [threading.Thread(target=lambda: seen.append(proxy.ident())) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(seen)) == 1
        assert pool.stats().in_use == 1  # kept after the threads ended
        with proxy:  # a no-op block for the shared connection
            pass
        assert pool.stats().in_use == 1
        proxy.release()
        assert pool.stats().in_use == 0


# ---------------------------------------------------------- set_pool / set_obj


def test_module_level_proxy_set_later():
    db: Proxy[Any] = Proxy()
    assert not db
    with pytest.raises(RuntimeError, match="set_pool"):
        db.anything
    assert "Proxy scope='thread'" in repr(db)

    db.set_obj({"a": 1})
    assert db
    assert db["a"] == 1  # dunders forwarded
    db["b"] = 2
    assert "b" in db
    assert len(db) == 2
    assert sorted(db) == ["a", "b"]
    del db["a"]
    assert db.get("b") == 2  # methods forwarded
    assert "items" in dir(db)
    db.release()  # nothing to release for a plain object

    calls: Proxy[Any] = Proxy(scope="shared")
    calls.set_obj(lambda x: x * 2)
    assert calls(21) == 42


def test_set_pool_switches_pools():
    with (
        Pool(Conn, backend="threading", max_size=1) as one,
        Pool(Conn, backend="threading", max_size=1) as two,
    ):
        db: Proxy[Conn] = Proxy(one)
        db.ident()
        assert one.stats().in_use == 1
        db.set_pool(two)
        db.ident()  # the old connection goes back to its own pool
        assert one.stats().in_use == 0
        assert two.stats().in_use == 1
        db.set_obj(Conn())
        assert db.ident() != id(two)
        db.set_pool(two)
        db.release()
        assert two.stats().in_use == 0


def test_forwarded_attribute_set_and_delete():
    db: Proxy[Any] = Proxy(scope="shared")
    target = Conn()
    db.set_obj(target)
    db.extra = 5
    assert target.extra == 5  # type: ignore[attr-defined]
    del db.extra
    assert not hasattr(target, "extra")


# -------------------------------------------------------------------- errors


def test_unknown_scope_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown scope 'process'") as info:
        Proxy(scope="process")  # type: ignore[arg-type]
    for scope in SCOPES:
        assert repr(scope) in str(info.value)


def test_greenlet_scope_without_gevent_or_eventlet(monkeypatch):
    monkeypatch.setitem(sys.modules, "gevent", None)
    monkeypatch.setitem(sys.modules, "eventlet", None)
    with pytest.raises(BackendUnavailable, match=r'scope "greenlet" needs gevent or eventlet.*pip install'):
        Proxy(scope="greenlet")


def test_set_pool_rejects_non_pools():
    with pytest.raises(TypeError, match="pool must be"):
        Proxy(pool=object())


def test_task_scope_outside_a_task_says_so():
    with Pool(Conn, backend="threading", max_size=1) as pool:
        db: Proxy[Conn] = Proxy(pool, scope="task")
        with pytest.raises(RuntimeError, match="inside an asyncio or trio task"):
            db.ident()
        assert pool.stats().in_use == 0


# --------------------------------------------------------------------- tasks


@pytest.mark.anyio
async def test_each_task_has_its_own_connection_returned_at_its_end(asched):
    """100 tasks each see their own connection, all back after they end (no release)."""
    import anyio

    async with AsyncPool(aconnect, backend=asched, max_size=N, timeout=LONG) as pool:
        db: Proxy[Conn] = Proxy(pool, scope="task")
        seen: list[int] = []
        everyone_in = anyio.Event()

        async def worker() -> None:
            conn = await db.acquire_async()
            mine = db.ident()  # plain attribute access after acquire_async()
            assert mine == id(conn)
            seen.append(mine)
            if len(seen) == N:
                everyone_in.set()
            await everyone_in.wait()
            assert db.ident() == mine

        async with anyio.create_task_group() as tg:
            for _ in range(N):
                tg.start_soon(worker)
        assert len(set(seen)) == N
        await wait_async(lambda: all_back(pool, N))
        assert pool.stats().discarded == 0


@pytest.mark.anyio
async def test_async_with_proxy_and_sync_access_errors(asched):
    async with AsyncPool(aconnect, backend=asched, max_size=2) as pool:
        db: Proxy[Conn] = Proxy(pool, scope="task")
        with pytest.raises(RuntimeError, match=r"await proxy\.acquire_async\(\)"):
            db.ident()
        async with db as conn:
            assert db.ident() == id(conn)
            assert pool.stats().in_use == 1
        assert pool.stats().in_use == 0
        conn2 = await db.acquire_async()
        assert await db.acquire_async() is conn2
        db.release()
        assert pool.stats().in_use == 0


@pytest.mark.anyio
async def test_cancelled_task_discards_its_connection(anyio_backend):
    if anyio_backend != "asyncio":
        pytest.skip("trio tasks have no done callback: the finalizer cannot tell how they ended")
    import asyncio

    async with AsyncPool(aconnect, max_size=2) as pool:
        db: Proxy[Conn] = Proxy(pool, scope="task")
        started = asyncio.Event()

        async def worker() -> None:
            await db.acquire_async()
            started.set()
            await asyncio.sleep(LONG)

        task = asyncio.ensure_future(worker())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_async(lambda: pool.stats().discarded == 1)
        assert pool.stats().in_use == 0


@pytest.mark.anyio
async def test_task_scope_with_a_sync_pool(anyio_backend):
    with Pool(Conn, backend="threading", max_size=2) as pool:
        db: Proxy[Conn] = Proxy(pool, scope="task")
        db.ident()  # acquires (would block the loop if the pool were exhausted)
        assert pool.stats().in_use == 1
        db.release()
        assert pool.stats().in_use == 0


async def wait_async(predicate: Callable[[], bool]) -> None:
    import anyio

    deadline = time.monotonic() + LONG
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await anyio.sleep(0.002)
