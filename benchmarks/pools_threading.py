"""The threading line-up: connpool, the minimal fair pool, psycopg_pool, SQLAlchemy's QueuePool,
ProxyPatternPool, generic-connection-pool (threading flavour) and the deque floor.

Contended workloads run on ``CONTENDED_THREADS`` OS threads; "yield once" is
``time.sleep(0)`` (which releases the GIL).

The full-featured pools' adapters live in ``bench_common`` (``full_featured_sync``), since
the gevent and eventlet line-ups run the same pools under monkey-patching; psycopg_pool runs
with a stand-in connection class there (no database).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bench_common import (
    CONTENDED_THREADS,
    PoolSpec,
    connpool_adapter,
    deque_floor,
    full_featured_sync,
    minimal_adapter,
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


POOLS = [
    PoolSpec("connpool Pool(threading)", "subject", connpool_adapter("threading"), ("connpool",)),
    PoolSpec("minimal fair pool", "reference", minimal_adapter(MinimalFairPool)),
    *full_featured_sync(),
    PoolSpec("deque floor", "floor", deque_floor, unbounded=True),
]
