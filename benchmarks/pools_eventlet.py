"""The eventlet line-up (monkey-patched process): connpool, the minimal fair pool,
``eventlet.pools.Pool``, the threading-based full-featured pools under monkey-patching
(psycopg_pool, SQLAlchemy's QueuePool, ProxyPatternPool, generic-connection-pool) and the
deque floor.

Contended workloads run ``CONTENDED_TASKS`` green threads; "yield once" is ``eventlet.sleep(0)``.

* ``eventlet.pools.Pool(max_size=..., create=connect)``: eventlet's own pool, ``get()`` / ``put()``.
* The full-featured pools are the threading ones (``bench_common.full_featured_sync``);
  SQLAlchemy's QueuePool is what eventlet applications (OpenStack services, for one) use
  under ``eventlet.monkey_patch()``.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import eventlet
import eventlet.hubs
import eventlet.pools
import greenlet

from bench_common import (
    CONTENDED_TASKS,
    PoolSpec,
    connpool_adapter,
    deque_floor,
    full_featured_sync,
    minimal_adapter,
)


class EventletKit:
    """Workers are green threads."""

    name = "eventlet"
    workers = CONTENDED_TASKS

    def spawn(self, fn: Callable[..., None], *args: Any) -> Any:
        return eventlet.spawn(fn, *args)

    def join_all(self, handles: list[Any], timeout: float) -> bool:
        try:
            with eventlet.Timeout(timeout):
                for thread in handles:
                    thread.wait()
        except eventlet.Timeout:
            return False
        return True

    def yield_once(self) -> None:
        eventlet.sleep(0)

    def sleep(self, seconds: float) -> None:
        eventlet.sleep(seconds)


KIT = EventletKit()


class MinimalFairPool:
    """The reference on eventlet: idle deque + FIFO of waiting greenlets, direct hand-off.

    A waiter parks in the hub; ``release`` schedules ``waiter.switch(conn)`` on the hub, as
    ``eventlet.queue`` does. No lock (green threads do not preempt). Connections are opened
    lazily up to ``max_size``. No timeout, no health check, no error handling.
    """

    def __init__(self, connect: Callable[[], Any], max_size: int) -> None:
        self._connect = connect
        self._room = max_size
        self._idle: deque[Any] = deque()
        self._waiters: deque[Any] = deque()

    def acquire(self) -> Any:
        if self._idle:
            return self._idle.pop()
        if self._room:
            self._room -= 1
            return self._connect()
        self._waiters.append(greenlet.getcurrent())
        return eventlet.hubs.get_hub().switch()

    def release(self, conn: Any) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            eventlet.hubs.get_hub().schedule_call_global(0, waiter.switch, conn)
        else:
            self._idle.append(conn)


@contextlib.contextmanager
def eventlet_pools_adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    pool = eventlet.pools.Pool(max_size=max_size, create=connect)
    yield pool.get, pool.put


POOLS = [
    PoolSpec("connpool Pool(eventlet)", "subject", connpool_adapter("eventlet"), ("connpool",)),
    PoolSpec("minimal fair pool", "reference", minimal_adapter(MinimalFairPool)),
    PoolSpec("eventlet.pools.Pool", "library", eventlet_pools_adapter, ("eventlet",)),
    *full_featured_sync(" (patched)"),
    PoolSpec("deque floor", "floor", deque_floor, unbounded=True),
]
