"""The threading line-up: connpool, the minimal fair pool, psycopg_pool, SQLAlchemy's QueuePool,
ProxyPatternPool, generic-connection-pool (threading flavour) and the deque floor.

Contended workloads run on ``CONTENDED_THREADS`` OS threads; "yield once" is
``time.sleep(0)`` (which releases the GIL).

psycopg_pool needs no database: ``ConnectionPool(connection_class=...)`` accepts any class
with a ``connect(conninfo, **kwargs)`` class method, and the pool only touches
``pgconn.transaction_status``, ``close()`` and a few private attributes it sets itself, so a
stand-in class (``_psycopg_standin``) wraps the benchmark's connection. Its ``getconn`` /
``putconn`` code path is the real one (lock, waiting queue, expiry check, stats).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from bench_common import (
    CONTENDED_THREADS,
    ENDPOINT,
    PoolSpec,
    connpool_adapter,
    deque_floor,
    minimal_adapter,
    sqlalchemy_adapter,
)


class ThreadingKit:
    """Workers are daemon OS threads."""

    name = "threading"
    workers = CONTENDED_THREADS

    def spawn(self, fn: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        return thread

    def join_all(self, handles: list[threading.Thread], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in handles:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in handles)

    def yield_once(self) -> None:
        time.sleep(0)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


KIT = ThreadingKit()


class MinimalFairPool:
    """The reference: an idle deque plus a FIFO of waiters with direct hand-off, under one lock.

    A returned connection goes straight to the oldest waiter (woken through its own
    pre-acquired lock), so a newcomer never overtakes a waiter. Connections are opened
    lazily up to ``max_size``. No timeout, no health check, no error handling: the least
    a fair pool has to do.
    """

    def __init__(self, connect: Callable[[], Any], max_size: int) -> None:
        self._connect = connect
        self._room = max_size
        self._idle: deque[Any] = deque()
        self._waiters: deque[list[Any]] = deque()  # [lock held until served, connection]
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._room:
                self._room -= 1
                waiter = None
            else:
                gate = threading.Lock()
                gate.acquire()
                waiter = [gate, None]
                self._waiters.append(waiter)
        if waiter is None:
            return self._connect()
        waiter[0].acquire()
        return waiter[1]

    def release(self, conn: Any) -> None:
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter[1] = conn
                waiter[0].release()
            else:
                self._idle.append(conn)


# --------------------------------------------------------------------------- adapters


def _psycopg_standin(connect: Callable[[], Any]) -> type:
    """A class psycopg_pool accepts as ``connection_class``, wrapping ``connect()``'s objects."""
    from psycopg.pq import TransactionStatus

    class PgStatus:
        transaction_status = TransactionStatus.IDLE

    class StandInConnection:
        pgconn = PgStatus()

        def __init__(self, raw: Any) -> None:
            self._pool = None
            self.raw = raw
            self.roundtrip = getattr(raw, "roundtrip", None)

        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> StandInConnection:
            return cls(connect())

        def close(self) -> None:
            self.raw.close()

        def __enter__(self) -> StandInConnection:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    return StandInConnection


@contextlib.contextmanager
def psycopg_adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    from psycopg_pool import ConnectionPool

    pool: Any = ConnectionPool(
        connection_class=_psycopg_standin(connect), min_size=max_size, max_size=max_size, open=False
    )
    pool.open(wait=True)
    try:
        yield pool.getconn, pool.putconn
    finally:
        pool.close()


@contextlib.contextmanager
def proxypattern_adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    from ProxyPatternPool import Pool

    pool = Pool(lambda _number: connect(), max_size=max_size)
    try:
        yield pool.get, pool.ret
    finally:
        pool.shutdown()


@contextlib.contextmanager
def generic_adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    from generic_connection_pool.threading import BaseConnectionManager, ConnectionPool

    class Manager(BaseConnectionManager[str, Any]):
        def create(self, endpoint: str, timeout: float | None = None) -> Any:
            return connect()

        def dispose(self, endpoint: str, conn: Any, timeout: float | None = None) -> None:
            conn.close()

    pool: Any = ConnectionPool(Manager(), min_idle=max_size, max_size=max_size, total_max_size=max_size)
    try:
        yield functools.partial(pool.acquire, ENDPOINT), functools.partial(pool.release, endpoint=ENDPOINT)
    finally:
        pool.close(timeout=1.0)


STANDIN_NOTE = "psycopg_pool with a stand-in connection_class (no database; see the module docstring)"

POOLS = [
    PoolSpec("connpool Pool(threading)", "subject", connpool_adapter("threading"), ("connpool",)),
    PoolSpec("minimal fair pool", "reference", minimal_adapter(MinimalFairPool)),
    PoolSpec(
        "psycopg_pool ConnectionPool", "library", psycopg_adapter, ("psycopg-pool", "psycopg"), STANDIN_NOTE
    ),
    PoolSpec("sqlalchemy QueuePool", "library", sqlalchemy_adapter, ("sqlalchemy",)),
    PoolSpec("ProxyPatternPool Pool", "library", proxypattern_adapter, ("proxypatternpool",)),
    PoolSpec("generic-connection-pool", "library", generic_adapter, ("generic-connection-pool",)),
    PoolSpec("deque floor", "floor", deque_floor, unbounded=True),
]
