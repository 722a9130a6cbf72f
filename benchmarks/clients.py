"""connpool's connectors against each client library's own pool, on a real server.

    python benchmarks/clients.py                        # Redis and PostgreSQL, threads and asyncio, ~30 s
    python benchmarks/clients.py --only redis --seconds 5
    python benchmarks/clients.py --redis-url redis://127.0.0.1:6379/0 --pg-dsn postgresql://postgres@127.0.0.1/postgres

Each measurement runs N workers (OS threads, or asyncio tasks) that loop on
one check-out / one simple command / check-in, over a pool of ``--size``
connections.  Both pools of a row are open at once and measured in
alternating slices (``--rounds``, each after a short warm-up), keeping the
best slice of each, so that load drifting on a shared machine hits both:

=========  ==========================================  =============================================
client     the library's own pool                      connpool
=========  ==========================================  =============================================
redis      ``redis.Redis`` over a                       ``Pool(RedisConnector(url))``, ``PING`` on
           ``BlockingConnectionPool``: ``PING``         ``with pool.connection() as r``
psycopg    ``psycopg_pool.ConnectionPool``:             ``Pool(PsycopgConnector(dsn))``: the same
           ``SELECT 1`` in ``with pool.connection()``
=========  ==========================================  =============================================

and the same with ``redis.asyncio`` / ``psycopg_pool.AsyncConnectionPool``
against ``AsyncPool`` on asyncio.  Both sides use autocommit PostgreSQL
connections and no per-checkout health check (connpool checks only
connections idle for ``check_after``, 0.5 s, which never happens here).

Printed: ops/s of each, and connpool's ratio to the library's pool (> 1:
connpool is faster); "no reset" is connpool with the connector's ``connect``,
``check`` and ``close`` but no ``reset`` hook, which shows what the pool's
background reset step (a hop to a worker thread or task per return) costs.
A server that does not answer skips its rows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from connpool import AsyncPool, Pool

WARMUP = 0.25  # seconds before each measured slice


# ---------------------------------------------------------------- drivers


def run_threads(op: Callable[[], object], workers: int, seconds: float) -> float:
    """ops/s of ``workers`` threads looping on ``op`` (measured after a warm-up)."""
    counts = [0] * workers
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        try:
            while not stop.is_set():
                op()
                counts[i] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    time.sleep(WARMUP)
    start, before = time.perf_counter(), sum(counts)
    time.sleep(seconds)
    end, after = time.perf_counter(), sum(counts)
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return (after - before) / (end - start)


async def run_tasks(op: Callable[[], Awaitable[object]], workers: int, seconds: float) -> float:
    """ops/s of ``workers`` asyncio tasks looping on ``op``."""
    counts = [0] * workers
    stop = False

    async def loop(i: int) -> None:
        while not stop:
            await op()
            counts[i] += 1

    tasks = [asyncio.ensure_future(loop(i)) for i in range(workers)]
    await asyncio.sleep(WARMUP)
    start, before = time.perf_counter(), sum(counts)
    await asyncio.sleep(seconds)
    end, after = time.perf_counter(), sum(counts)
    stop = True
    await asyncio.gather(*tasks)
    return (after - before) / (end - start)


# ----------------------------------------------------------------- redis
#
# Each ``setup_*`` opens the pools and returns (their op, connpool's op, the op of
# a connpool pool without the connector's reset hook, cleanup).


def setup_redis_sync(
    url: str, size: int
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], None]]:
    import redis

    from connpool.contrib.redis import RedisConnector

    native = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, max_connections=size))
    connector = RedisConnector(url)
    pool = Pool(connector, max_size=size, min_size=size)
    bare = Pool(connector.connect, close=connector.close, check=connector.check, max_size=size, min_size=size)
    for p in (pool, bare):
        p.open(wait=True, timeout=10)

    def ours() -> None:
        with pool.connection() as r:
            r.ping()

    def ours_bare() -> None:
        with bare.connection() as r:
            r.ping()

    def cleanup() -> None:
        pool.close()
        bare.close()
        native.close()
        native.connection_pool.disconnect()

    return native.ping, ours, ours_bare, cleanup


async def setup_redis_async(url: str, size: int) -> tuple[Any, Any, Any]:
    import redis.asyncio

    from connpool.contrib.redis import AsyncRedisConnector

    native = redis.asyncio.Redis(
        connection_pool=redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=size)
    )
    connector = AsyncRedisConnector(url)
    pool = AsyncPool(connector, max_size=size, min_size=size)
    bare = AsyncPool(
        connector.connect, close=connector.close, check=connector.check, max_size=size, min_size=size
    )
    for p in (pool, bare):
        await p.open(wait=True, timeout=10)

    async def ours() -> None:
        async with pool.connection() as r:
            await r.ping()

    async def ours_bare() -> None:
        async with bare.connection() as r:
            await r.ping()

    async def cleanup() -> None:
        await pool.close()
        await bare.close()
        await native.aclose()
        await native.connection_pool.disconnect()

    return native.ping, ours, ours_bare, cleanup


# --------------------------------------------------------------- psycopg


def setup_psycopg_sync(
    dsn: str, size: int
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], None]]:
    import psycopg_pool

    from connpool.contrib.psycopg import PsycopgConnector

    native = psycopg_pool.ConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=True
    )
    native.wait(timeout=10)
    connector = PsycopgConnector(dsn, autocommit=True)
    pool = Pool(connector, max_size=size, min_size=size)
    bare = Pool(connector.connect, close=connector.close, check=connector.check, max_size=size, min_size=size)
    for p in (pool, bare):
        p.open(wait=True, timeout=10)

    def theirs() -> None:
        with native.connection() as conn:
            conn.execute("SELECT 1")

    def ours() -> None:
        with pool.connection() as conn:
            conn.execute("SELECT 1")

    def ours_bare() -> None:
        with bare.connection() as conn:
            conn.execute("SELECT 1")

    def cleanup() -> None:
        pool.close()
        bare.close()
        native.close()

    return theirs, ours, ours_bare, cleanup


async def setup_psycopg_async(dsn: str, size: int) -> tuple[Any, Any, Any]:
    import psycopg_pool

    from connpool.contrib.psycopg import AsyncPsycopgConnector

    native = psycopg_pool.AsyncConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
    )
    await native.open(wait=True, timeout=10)
    connector = AsyncPsycopgConnector(dsn, autocommit=True)
    pool = AsyncPool(connector, max_size=size, min_size=size)
    bare = AsyncPool(
        connector.connect, close=connector.close, check=connector.check, max_size=size, min_size=size
    )
    for p in (pool, bare):
        await p.open(wait=True, timeout=10)

    async def theirs() -> None:
        async with native.connection() as conn:
            await conn.execute("SELECT 1")

    async def ours() -> None:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def ours_bare() -> None:
        async with bare.connection() as conn:
            await conn.execute("SELECT 1")

    async def cleanup() -> None:
        await pool.close()
        await bare.close()
        await native.close()

    return theirs, ours, ours_bare, cleanup


# ------------------------------------------------------------- comparing


def compare_sync(setup: Any, target: str, args: argparse.Namespace) -> list[float]:
    """Best ops/s of [their pool, connpool, connpool without reset], in alternating slices."""
    *ops, cleanup = setup(target, args.size)
    best = [0.0] * len(ops)
    try:
        for _ in range(args.rounds):
            for i, op in enumerate(ops):
                best[i] = max(best[i], run_threads(op, args.threads, args.seconds / args.rounds))
    finally:
        cleanup()
    return best


async def compare_async(setup: Any, target: str, args: argparse.Namespace) -> list[float]:
    """:func:`compare_sync` on asyncio tasks."""
    *ops, cleanup = await setup(target, args.size)
    best = [0.0] * len(ops)
    try:
        for _ in range(args.rounds):
            for i, op in enumerate(ops):
                best[i] = max(best[i], await run_tasks(op, args.tasks, args.seconds / args.rounds))
    finally:
        await cleanup()
    return best


# ------------------------------------------------------------------ main


def reachable(client: str, target: str) -> str | None:
    """``None`` if the server answers, else why not."""
    try:
        if client == "redis":
            import redis

            r = redis.Redis.from_url(target, socket_connect_timeout=2)
            r.ping()
            r.close()
        else:
            import psycopg

            psycopg.connect(target, connect_timeout=2).close()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="measured seconds per pool and row (default 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating slices per pool; the best counts (default 2)"
    )
    parser.add_argument("--size", type=int, default=10, help="pool size (default 10)")
    parser.add_argument("--threads", type=int, default=16, help="worker threads (default 16)")
    parser.add_argument("--tasks", type=int, default=64, help="asyncio worker tasks (default 64)")
    parser.add_argument("--only", choices=("redis", "psycopg"), action="append", help="run only this client")
    parser.add_argument("--no-async", action="store_true", help="skip the asyncio rows")
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, str, list[float]]] = []
    plan: list[tuple[str, str, Any, Any]] = [
        ("redis", args.redis_url, setup_redis_sync, setup_redis_async),
        ("psycopg", args.pg_dsn, setup_psycopg_sync, setup_psycopg_async),
    ]
    print(
        f"pool size {args.size}; {args.threads} threads / {args.tasks} asyncio tasks; "
        f"{args.seconds:g} s per measurement"
    )
    for client, target, sync_fn, async_fn in plan:
        if args.only and client not in args.only:
            continue
        problem = reachable(client, target)
        if problem is not None:
            print(f"{client}: skipped, server not reachable ({problem})")
            continue
        native_name = "BlockingConnectionPool" if client == "redis" else "psycopg_pool"
        rows.append((client, "threading", native_name, compare_sync(sync_fn, target, args)))
        print(f"  {client:8} threading  done", file=sys.stderr)
        if not args.no_async:
            rows.append((client, "asyncio", native_name, asyncio.run(compare_async(async_fn, target, args))))
            print(f"  {client:8} asyncio    done", file=sys.stderr)

    if rows:
        columns = f"{'their ops/s':>12}{'connpool':>10}{'ratio':>7}{'no reset':>10}{'ratio':>7}"
        header = f"{'client':9}{'runtime':11}{'their pool':23}{columns}"
        print(header)
        print("-" * len(header))
        for client, runtime, native_name, (theirs, ours, bare) in rows:
            print(
                f"{client:9}{runtime:11}{native_name:23}{theirs:12,.0f}"
                f"{ours:10,.0f}{ours / theirs:7.2f}{bare:10,.0f}{bare / theirs:7.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
