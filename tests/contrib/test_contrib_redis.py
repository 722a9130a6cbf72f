"""RedisConnector / AsyncRedisConnector against a real Redis server.

Sync tests run on every enabled sync backend (``sched``); async tests on
asyncio (redis-py's asyncio client does not run on trio: there the test checks
the error says so).
"""

from __future__ import annotations

import uuid

import pytest

from connpool import AsyncPool, Pool, PoolTimeout

from .helpers import (
    Load,
    asettle,
    await_until,
    free_port,
    require_concurrency,
    settle,
    timed_concurrently,
    wait_until,
)

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.services

from connpool.contrib.redis import AsyncRedisConnector, RedisConnector  # noqa: E402


def unique(prefix: str) -> str:
    return f"connpool-test:{prefix}:{uuid.uuid4().hex}"


def clients_named(admin, name: str) -> int:
    return sum(1 for client in admin.client_list() if client.get("name") == name)


@pytest.fixture
def admin(redis_server_url):
    client = redis.Redis.from_url(redis_server_url)
    yield client
    client.close()


# --------------------------------------------------------------------- sync


def test_round_trips_one_socket_per_pooled_client(sched, redis_server_url, admin):
    name = unique("sockets").replace(":", "-")
    key = unique("counter")
    connector = RedisConnector(redis_server_url, client_name=name)
    with Pool(connector, backend=sched, max_size=3, timeout=10) as pool:
        done = []

        def worker() -> None:
            for _ in range(20):
                with pool.connection() as r:
                    r.incr(key)
                    pipe = r.pipeline()  # pipelines and pub/sub reuse the client's one socket
                    pipe.incr(key).incr(key, -1)
                    pipe.execute()
                sched.sleep(0)
            done.append(1)

        handles = [sched.spawn(worker) for _ in range(6)]
        for handle in handles:
            assert handle.join(30)
        assert len(done) == 6
        assert int(admin.get(key)) == 120
        stats = settle(sched, pool)
        assert 1 <= stats.size <= 3
        assert clients_named(admin, name) == stats.size
        with pool.connection() as r:
            pubsub = r.pubsub()
            pubsub.subscribe(unique("channel"))
            assert clients_named(admin, name) == stats.size
            pubsub.unsubscribe()
            pubsub.close()
    wait_until(sched, lambda: clients_named(admin, name) == 0, what="sockets closed with the pool")
    admin.delete(key)


def test_commands_run_concurrently(sched, redis_server_url):
    """Under gevent/eventlet monkey-patching redis-py's sockets are cooperative: blocking pops overlap."""
    require_concurrency(sched)
    with Pool(RedisConnector(redis_server_url), backend=sched, max_size=5) as pool:
        pool.resize(min_size=5)
        pool.wait(timeout=10)
        key = unique("empty-list")

        def popper() -> None:
            with pool.connection() as r:
                assert r.blpop([key], timeout=0.3) is None  # blocks this client only, server side

        assert timed_concurrently(sched, popper, 5) < 1.0  # 1.5 s if serialized
        settle(sched, pool)


def test_killed_connection_is_replaced_at_checkout(sched, redis_server_url, admin):
    with Pool(RedisConnector(redis_server_url), backend=sched, max_size=1, check_after=0) as pool:
        with pool.connection() as r:
            first = r.client_id()
        assert admin.client_kill_filter(_id=first) == 1
        with pool.connection() as r:
            second = r.client_id()
            assert r.ping()
        assert second != first
        stats = settle(sched, pool)
        assert stats.discarded == 1
        assert stats.size == 1


def test_connection_broken_while_checked_out_is_discarded(sched, redis_server_url, admin):
    with Pool(RedisConnector(redis_server_url), backend=sched, max_size=1, check_after=60) as pool:
        with pytest.raises(redis.ConnectionError):
            with pool.connection() as r:
                admin.client_kill_filter(_id=r.client_id())
                r.ping()
        wait_until(sched, lambda: pool.stats().discarded == 1, what="reset discards the broken client")
        with pool.connection() as r:
            assert r.ping()
        settle(sched, pool)


def test_unread_reply_is_discarded_on_return(sched, redis_server_url):
    with Pool(RedisConnector(redis_server_url), backend=sched, max_size=1) as pool:
        with pool.connection() as r:
            r.connection.send_command("PING")  # and never read the reply...
            assert r.connection.can_read(timeout=5)  # ...which has arrived
        wait_until(sched, lambda: pool.stats().discarded == 1, what="reset sees the unread reply")
        with pool.connection() as r:
            assert r.ping()
        settle(sched, pool)


def test_client_returned_with_a_live_pubsub_is_discarded(sched, redis_server_url):
    with Pool(RedisConnector(redis_server_url), backend=sched, max_size=1) as pool:
        with pool.connection() as r:
            first = r.client_id()
            pubsub = r.pubsub()
            pubsub.subscribe(unique("channel"))
            assert pubsub.get_message(timeout=5)["type"] == "subscribe"
            # returned still subscribed (no unread bytes: only the PubSub knows)
        wait_until(sched, lambda: pool.stats().discarded == 1, what="reset sees the live PubSub")
        with pool.connection() as r:
            assert r.client_id() != first
            assert r.ping()
        pubsub.close()
        settle(sched, pool)


def test_full_reset_clears_session_state(sched, redis_server_url):
    key = unique("multi")
    connector = RedisConnector(redis_server_url, full_reset=True)
    with Pool(connector, backend=sched, max_size=1) as pool:
        with pool.connection() as r:
            first = r.client_id()
            db = r.connection.db
            r.execute_command("SELECT", (db + 1) % 16)
            r.execute_command("MULTI")  # left open
        with pool.connection() as r:
            assert r.client_id() == first  # reused, not replaced
            assert r.set(key, "1") is True  # not queued in a MULTI
            assert r.client_info()["db"] == db
            r.delete(key)
        assert pool.stats().discarded == 0


def test_refused_port_times_out_saying_cannot_connect(sched):
    url = f"redis://127.0.0.1:{free_port()}/0"
    with Pool(RedisConnector(url), backend=sched, max_size=2) as pool:
        for _ in range(2):  # the pool stays usable: each acquire reports the same cause
            with pytest.raises(PoolTimeout, match="cannot connect") as info:
                pool.acquire(timeout=0.3)
            assert isinstance(info.value.__cause__, redis.ConnectionError)
            assert "connecting to 127.0.0.1" in str(info.value.__cause__)
        settle(sched, pool)


def test_bad_url_and_options_fail_at_construction():
    with pytest.raises(ValueError, match="invalid Redis URL"):
        RedisConnector("http://127.0.0.1:6379")
    with pytest.raises(TypeError, match="no_such_option"):
        RedisConnector("redis://127.0.0.1:6379", no_such_option=1)
    with pytest.raises(TypeError, match="url must be a str"):
        RedisConnector(6379)  # type: ignore[arg-type]
    assert "hunter2" not in repr(RedisConnector("redis://user:hunter2@127.0.0.1:6379/0"))


def test_server_restart_under_load(sched, private_redis):
    """Kill the server under load and restart it on the same port: the pool recovers, nothing is lost."""
    key = "hits"
    connector = RedisConnector(private_redis.url, socket_timeout=2.0)
    with Pool(connector, backend=sched, max_size=4, timeout=5, check_after=0.05) as pool:
        counts = {"ok": 0, "errors": 0}
        stop = sched.event()

        def worker() -> None:
            while not stop.is_set():
                try:
                    with pool.connection(timeout=0.5) as r:
                        r.incr(key)
                    counts["ok"] += 1
                except (redis.RedisError, PoolTimeout):
                    counts["errors"] += 1
                    sched.sleep(0.01)
                sched.sleep(0)

        handles = [sched.spawn(worker) for _ in range(8)]
        wait_until(sched, lambda: counts["ok"] >= 100, what="load running")
        private_redis.stop()
        wait_until(sched, lambda: counts["errors"] >= 5, what="workers see the outage")
        private_redis.start()
        recovered_from = counts["ok"]
        wait_until(sched, lambda: counts["ok"] >= recovered_from + 100, timeout=20, what="recovery")
        stop.set()
        for handle in handles:
            assert handle.join(10)
        stats = settle(sched, pool)
        assert stats.size <= 4
        # Nothing lost: the whole capacity can be checked out, every client alive.
        held = [pool.acquire(timeout=5) for _ in range(4)]
        for r in held:
            assert r.ping()
        for r in held:
            pool.release(r)
        settle(sched, pool)


# -------------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_round_trips(anyio_backend, redis_server_url):
    if anyio_backend != "asyncio":
        pytest.skip("redis.asyncio runs on asyncio only (see test_async_on_trio_says_asyncio_only)")
    import anyio

    key = unique("acounter")
    async with AsyncPool(AsyncRedisConnector(redis_server_url), max_size=3) as pool:

        async def worker() -> None:
            for _ in range(20):
                async with pool.connection() as r:
                    await r.incr(key)
                    pipe = r.pipeline()
                    pipe.incr(key).incr(key, -1)
                    await pipe.execute()

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(worker)
        async with pool.connection() as r:
            assert int(await r.get(key)) == 120
            await r.delete(key)
        stats = await asettle(pool)
        assert 1 <= stats.size <= 3


@pytest.mark.anyio
async def test_async_killed_connection_is_replaced(anyio_backend, redis_server_url, admin):
    if anyio_backend != "asyncio":
        pytest.skip("redis.asyncio runs on asyncio only")
    async with AsyncPool(AsyncRedisConnector(redis_server_url), max_size=1, check_after=0) as pool:
        async with pool.connection() as r:
            first = await r.client_id()
        admin.client_kill_filter(_id=first)
        async with pool.connection() as r:
            assert await r.client_id() != first
        assert pool.stats().discarded == 1
        # broken while checked out: reset discards it
        with pytest.raises(redis.ConnectionError):
            async with pool.connection() as r:
                admin.client_kill_filter(_id=await r.client_id())
                await r.ping()
        await await_until(lambda: pool.stats().discarded == 2, what="reset discards the broken client")
        await asettle(pool)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_async_server_restart_under_load(anyio_backend, private_redis):
    """The async twin of test_server_restart_under_load (the server is killed and started in a thread)."""
    if anyio_backend != "asyncio":
        pytest.skip("redis.asyncio runs on asyncio only")
    import anyio

    key = "hits"
    connector = AsyncRedisConnector(private_redis.url, socket_timeout=2.0)
    async with AsyncPool(connector, max_size=4, timeout=5, check_after=0.05) as pool:
        load = Load(workers=8, expected=(redis.RedisError, PoolTimeout))
        stop = anyio.Event()

        async def worker(i: int) -> None:
            while not stop.is_set():
                try:
                    async with pool.connection(timeout=0.5) as r:
                        await r.incr(key)
                    load.success(i)
                except load.expected as exc:
                    load.failure(i, exc)
                    await anyio.sleep(0.01)
                except Exception as exc:
                    load.unexpected(exc)
                    return
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            for i in range(len(load.ok)):
                tg.start_soon(worker, i)
            await await_until(load.running, what="every worker running")
            await anyio.to_thread.run_sync(private_redis.stop)
            await await_until(load.outage_seen, what="every worker sees the outage")
            await anyio.to_thread.run_sync(private_redis.start)
            load.mark()
            await await_until(load.recovered, timeout=30, what="every worker succeeds again")
            stop.set()
        load.check()
        stats = await asettle(pool)
        assert stats.size <= 4
        assert stats.discarded >= 1
        # Nothing lost: the whole capacity can be checked out, every client alive.
        held = [await pool.acquire(timeout=5) for _ in range(4)]
        for r in held:
            assert await r.ping()
        for r in held:
            pool.release(r)
        await asettle(pool)


@pytest.mark.anyio
async def test_async_refused_port(anyio_backend):
    if anyio_backend != "asyncio":
        pytest.skip("redis.asyncio runs on asyncio only")
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with AsyncPool(AsyncRedisConnector(url), max_size=1) as pool:
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            await pool.acquire(timeout=0.3)
        assert isinstance(info.value.__cause__, redis.ConnectionError)


@pytest.mark.anyio
async def test_async_on_trio_says_asyncio_only(anyio_backend, redis_server_url):
    if anyio_backend != "trio":
        pytest.skip("the trio case")
    async with AsyncPool(AsyncRedisConnector(redis_server_url), max_size=1) as pool:
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            await pool.acquire(timeout=0.3)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "asyncio only" in str(info.value.__cause__)
