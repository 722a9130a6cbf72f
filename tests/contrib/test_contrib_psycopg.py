"""PsycopgConnector / AsyncPsycopgConnector against a real PostgreSQL server.

Sync tests run on every enabled sync backend (``sched``); async tests on
asyncio (psycopg's AsyncConnection does not run on trio: there the test checks
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

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.services

from psycopg import pq  # noqa: E402

from connpool.contrib.psycopg import AsyncPsycopgConnector, PsycopgConnector  # noqa: E402

IDLE = pq.TransactionStatus.IDLE


@pytest.fixture
def admin(pg_server_dsn):
    conn = psycopg.connect(pg_server_dsn, autocommit=True)
    yield conn
    conn.close()


def terminate(admin, pid: int) -> None:
    assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


# --------------------------------------------------------------------- sync


def test_round_trips(sched, pg_server_dsn):
    with Pool(PsycopgConnector(pg_server_dsn), backend=sched, max_size=3, timeout=10) as pool:
        results = []

        def worker(n: int) -> None:
            for i in range(10):
                with pool.connection() as conn:
                    row = conn.execute("SELECT %s::int * 2", (n * 100 + i,)).fetchone()
                    conn.commit()
                    results.append(row[0])
                sched.sleep(0)

        handles = [sched.spawn(worker, n) for n in range(5)]
        for handle in handles:
            assert handle.join(30)
        assert sorted(results) == sorted(2 * (n * 100 + i) for n in range(5) for i in range(10))
        stats = settle(sched, pool)
        assert 1 <= stats.size <= 3


def test_queries_run_concurrently(sched, pg_server_dsn):
    """Under gevent/eventlet monkey-patching psycopg waits cooperatively: sleeps overlap."""
    require_concurrency(sched)
    with Pool(PsycopgConnector(pg_server_dsn, autocommit=True), backend=sched, max_size=5) as pool:
        pool.resize(min_size=5)
        pool.wait(timeout=10)

        def sleeper() -> None:
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(0.3)")

        assert timed_concurrently(sched, sleeper, 5) < 1.0  # 1.5 s if serialized
        settle(sched, pool)


def test_reset_rolls_back_an_open_transaction(sched, pg_server_dsn):
    with Pool(PsycopgConnector(pg_server_dsn), backend=sched, max_size=1) as pool:
        with pool.connection() as conn:
            assert conn.autocommit is False
            conn.execute("CREATE TEMP TABLE connpool_t (x int)")
            conn.commit()
            conn.execute("INSERT INTO connpool_t VALUES (1)")
            assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
            pid = conn.info.backend_pid
            # released without commit
        with pool.connection() as conn:
            assert conn.info.backend_pid == pid  # the same session, reused
            assert conn.info.transaction_status == IDLE
            assert conn.execute("SELECT count(*) FROM connpool_t").fetchone() == (0,)
            conn.rollback()
        # a failed transaction (INERROR) is rolled back too; autocommit is restored
        with pytest.raises(psycopg.errors.DivisionByZero):
            with pool.connection() as conn:
                conn.autocommit = True
                conn.autocommit = False
                conn.execute("SELECT 1/0")
        with pool.connection() as conn:
            assert conn.info.transaction_status == IDLE
            conn.autocommit = True
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.info.backend_pid == pid
        stats = settle(sched, pool)
        assert stats.discarded == 0


def test_connection_left_active_is_discarded(sched, pg_server_dsn):
    with Pool(PsycopgConnector(pg_server_dsn), backend=sched, max_size=1) as pool:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
            copy = conn.cursor().copy("COPY (SELECT 1) TO STDOUT")
            copy.__enter__()  # a COPY in progress, abandoned
            assert conn.info.transaction_status == pq.TransactionStatus.ACTIVE
        wait_until(sched, lambda: pool.stats().discarded == 1, what="reset discards an ACTIVE connection")
        with pool.connection() as conn:
            assert conn.info.backend_pid != pid
            assert conn.execute("SELECT 1").fetchone() == (1,)
        settle(sched, pool)


def test_terminated_backend_is_replaced_at_checkout(sched, pg_server_dsn, admin):
    with Pool(PsycopgConnector(pg_server_dsn), backend=sched, max_size=1, check_after=0) as pool:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        terminate(admin, pid)
        with pool.connection() as conn:
            assert conn.info.backend_pid != pid
            assert conn.execute("SELECT 1").fetchone() == (1,)
        stats = settle(sched, pool)
        assert stats.discarded == 1
        assert stats.size == 1


def test_backend_terminated_while_checked_out_is_discarded(sched, pg_server_dsn, admin):
    with Pool(PsycopgConnector(pg_server_dsn), backend=sched, max_size=1, check_after=60) as pool:
        with pytest.raises(psycopg.OperationalError):
            with pool.connection() as conn:
                terminate(admin, conn.info.backend_pid)
                conn.execute("SELECT 1")
        wait_until(sched, lambda: pool.stats().discarded == 1, what="reset discards the broken connection")
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        settle(sched, pool)


def test_refused_port_times_out_saying_cannot_connect(sched):
    dsn = f"host=127.0.0.1 port={free_port()} user=nobody dbname=nothing"
    with Pool(PsycopgConnector(dsn), backend=sched, max_size=1) as pool:
        for _ in range(2):  # the pool stays usable
            with pytest.raises(PoolTimeout, match="cannot connect") as info:
                pool.acquire(timeout=0.3)
            assert isinstance(info.value.__cause__, psycopg.OperationalError)
            assert "Connection refused" in str(info.value.__cause__)


def test_unknown_database_reports_the_server_error(sched, pg_server_dsn):
    connector = PsycopgConnector(pg_server_dsn, dbname="connpool_no_such_database")
    with Pool(connector, backend=sched, max_size=1) as pool:
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            pool.acquire(timeout=0.5)
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert "connpool_no_such_database" in str(info.value.__cause__)


def test_bad_dsn_fails_at_construction():
    with pytest.raises(ValueError, match="invalid PostgreSQL connection string"):
        PsycopgConnector("this is not a dsn")
    with pytest.raises(ValueError, match="frobnicate"):
        PsycopgConnector("host=127.0.0.1", frobnicate=1)
    with pytest.raises(ValueError, match="connect_timeout"):
        PsycopgConnector("host=127.0.0.1", connect_timeout=0)
    with pytest.raises(TypeError, match="conninfo"):
        PsycopgConnector(5432)  # type: ignore[arg-type]
    connector = PsycopgConnector("host=127.0.0.1 password=hunter2")
    assert "hunter2" not in repr(connector)
    assert "connect_timeout=10" in connector.conninfo


def test_configure_runs_on_new_connections(sched, pg_server_dsn):
    def configure(conn) -> None:
        conn.execute("SET application_name = 'connpool-test'")
        conn.commit()

    with Pool(PsycopgConnector(pg_server_dsn, configure=configure), backend=sched, max_size=1) as pool:
        with pool.connection() as conn:
            assert conn.execute("SHOW application_name").fetchone() == ("connpool-test",)
            conn.rollback()


def test_configure_leaving_a_transaction_fails_the_connect(sched, pg_server_dsn):
    connector = PsycopgConnector(pg_server_dsn, configure=lambda conn: conn.execute("SELECT 1"))
    with Pool(connector, backend=sched, max_size=1) as pool:
        with pytest.raises(PoolTimeout) as info:
            pool.acquire(timeout=0.3)
        assert "configure() left the connection" in str(info.value.__cause__)


@pytest.mark.timeout(60)
def test_server_restart_under_load(sched, private_pg):
    """Stop the server at once under load and start it again on the same port: the pool recovers."""
    name = f"connpool-test-restart-{uuid.uuid4().hex[:12]}"
    connector = PsycopgConnector(private_pg.dsn, application_name=name)
    with Pool(connector, backend=sched, min_size=2, max_size=4, timeout=5, check_after=0.05) as pool:
        pool.wait(timeout=10)
        load = Load(workers=8, expected=(psycopg.OperationalError, PoolTimeout))
        stop = sched.event()

        def worker(i: int) -> None:
            while not stop.is_set():
                try:
                    with pool.connection(timeout=0.5) as conn:
                        # returned inside a transaction: reset rolls it back, or discards a dead one
                        assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
                    load.success(i)
                except load.expected as exc:
                    load.failure(i, exc)
                    sched.sleep(0.01)
                except Exception as exc:
                    load.unexpected(exc)
                    return
                sched.sleep(0)

        handles = [sched.spawn(worker, i) for i in range(len(load.ok))]
        wait_until(sched, load.running, what="every worker running queries")
        private_pg.stop("immediate")
        wait_until(sched, load.outage_seen, what="every worker sees the outage")
        private_pg.start()
        load.mark()
        wait_until(sched, load.recovered, timeout=30, what="every worker succeeds again")
        stop.set()
        for handle in handles:
            assert handle.join(10)
        load.check()
        stats = settle(sched, pool)
        assert stats.connect_errors >= 1
        assert stats.discarded >= 1
        # Nothing lost: the whole capacity can be checked out, every connection alive.
        held = [pool.acquire(timeout=5) for _ in range(4)]
        for conn in held:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        for conn in held:
            pool.release(conn)
        stats = settle(sched, pool)
        assert 2 <= stats.size <= 4, stats
        wait_until(
            sched, lambda: private_pg.backends(name) == pool.stats().size, what="one session per connection"
        )
    wait_until(sched, lambda: private_pg.backends(name) == 0, what="no session left after close()")


# -------------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_round_trips_and_rollback(anyio_backend, pg_server_dsn):
    if anyio_backend != "asyncio":
        pytest.skip("psycopg's AsyncConnection runs on asyncio only")
    import anyio

    async with AsyncPool(AsyncPsycopgConnector(pg_server_dsn), max_size=3) as pool:
        results = []

        async def worker(n: int) -> None:
            for i in range(10):
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT %s::int * 2", (n * 100 + i,))
                    results.append((await cur.fetchone())[0])
                    await conn.commit()

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(worker, n)
        assert len(results) == 50

        async with pool.connection() as conn:
            pid = conn.info.backend_pid
            await conn.execute("CREATE TEMP TABLE connpool_t (x int)")
            await conn.commit()
            await conn.execute("INSERT INTO connpool_t VALUES (1)")
        await asettle(pool)
        # the last connection returned is reused first (LIFO)
        async with pool.connection() as conn:
            assert conn.info.backend_pid == pid
            assert conn.info.transaction_status == IDLE
            cur = await conn.execute("SELECT count(*) FROM connpool_t")
            assert await cur.fetchone() == (0,)
            await conn.rollback()
        await asettle(pool)


@pytest.mark.anyio
async def test_async_terminated_backend_is_replaced(anyio_backend, pg_server_dsn, admin):
    if anyio_backend != "asyncio":
        pytest.skip("psycopg's AsyncConnection runs on asyncio only")
    async with AsyncPool(AsyncPsycopgConnector(pg_server_dsn), max_size=1, check_after=0) as pool:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        terminate(admin, pid)
        async with pool.connection() as conn:
            assert conn.info.backend_pid != pid
        with pytest.raises(psycopg.OperationalError):
            async with pool.connection() as conn:
                terminate(admin, conn.info.backend_pid)
                await conn.execute("SELECT 1")
        await await_until(lambda: pool.stats().discarded == 2, what="reset discards the broken connection")
        await asettle(pool)


@pytest.mark.anyio
async def test_async_refused_port(anyio_backend):
    if anyio_backend != "asyncio":
        pytest.skip("psycopg's AsyncConnection runs on asyncio only")
    dsn = f"host=127.0.0.1 port={free_port()} user=nobody dbname=nothing"
    async with AsyncPool(AsyncPsycopgConnector(dsn), max_size=1) as pool:
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            await pool.acquire(timeout=0.3)
        assert isinstance(info.value.__cause__, psycopg.OperationalError)


@pytest.mark.anyio
async def test_async_on_trio_says_asyncio_only(anyio_backend, pg_server_dsn):
    if anyio_backend != "trio":
        pytest.skip("the trio case")
    async with AsyncPool(AsyncPsycopgConnector(pg_server_dsn), max_size=1) as pool:
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            await pool.acquire(timeout=0.3)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "asyncio only" in str(info.value.__cause__)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_async_server_restart_under_load(anyio_backend, private_pg):
    """The async twin of test_server_restart_under_load (the server is stopped and started in a thread)."""
    if anyio_backend != "asyncio":
        pytest.skip("psycopg's AsyncConnection runs on asyncio only")
    import anyio

    name = f"connpool-test-arestart-{uuid.uuid4().hex[:12]}"
    connector = AsyncPsycopgConnector(private_pg.dsn, application_name=name)
    async with AsyncPool(connector, min_size=2, max_size=4, timeout=5, check_after=0.05) as pool:
        await pool.wait(timeout=10)
        load = Load(workers=8, expected=(psycopg.OperationalError, PoolTimeout))
        stop = anyio.Event()

        async def worker(i: int) -> None:
            while not stop.is_set():
                try:
                    async with pool.connection(timeout=0.5) as conn:
                        cur = await conn.execute("SELECT %s::int", (i,))
                        assert await cur.fetchone() == (i,)
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
            await await_until(load.running, what="every worker running queries")
            await anyio.to_thread.run_sync(private_pg.stop)
            await await_until(load.outage_seen, what="every worker sees the outage")
            await anyio.to_thread.run_sync(private_pg.start)
            load.mark()
            await await_until(load.recovered, timeout=30, what="every worker succeeds again")
            stop.set()
        load.check()
        stats = await asettle(pool)
        assert stats.connect_errors >= 1
        assert stats.discarded >= 1
        held = [await pool.acquire(timeout=5) for _ in range(4)]
        for conn in held:
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
        for conn in held:
            pool.release(conn)
        stats = await asettle(pool)
        assert 2 <= stats.size <= 4, stats
        await await_until(
            lambda: private_pg.backends(name) == pool.stats().size, what="one session per connection"
        )
    await await_until(lambda: private_pg.backends(name) == 0, what="no session left after close()")
