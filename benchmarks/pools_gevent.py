"""The gevent line-up (monkey-patched process): connpool, the minimal fair pool, a gevent queue
pool, the threading-based full-featured pools under monkey-patching (psycopg_pool, SQLAlchemy's
QueuePool, ProxyPatternPool, generic-connection-pool) and the deque floor.

Contended workloads run ``CONTENDED_TASKS`` greenlets; "yield once" is ``gevent.sleep(0)``.

* gevent queue pool: the recipe gevent users write, a ``gevent.queue.Queue`` prefilled with
  ``max_size`` connections, ``get()`` / ``put_nowait()``.
* The full-featured pools are the threading ones (``bench_common.full_featured_sync``): what
  Flask/SQLAlchemy or psycopg applications served by gevent workers use; under
  ``monkey.patch_all()`` their locks and conditions become cooperative.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.queue
from gevent.hub import Waiter

from bench_common import (
    CONTENDED_TASKS,
    PoolSpec,
    connpool_adapter,
    deque_floor,
    full_featured_sync,
    minimal_adapter,
)


class GeventKit:
    """Workers are greenlets."""

    name = "gevent"
    workers = CONTENDED_TASKS

    def spawn(self, fn: Callable[..., None], *args: Any) -> gevent.Greenlet:
        return gevent.spawn(fn, *args)

    def join_all(self, handles: list[gevent.Greenlet], timeout: float) -> bool:
        done = gevent.joinall(handles, timeout=timeout)
        return len(done) == len(handles)

    def yield_once(self) -> None:
        gevent.sleep(0)

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)


KIT = GeventKit()


class MinimalFairPool:
    """The reference on gevent: idle deque + FIFO of hub ``Waiter`` objects, direct hand-off.

    No lock (greenlets do not preempt). ``release`` schedules the oldest waiter's switch on
    the hub loop, as ``gevent.queue`` does. Connections are opened lazily up to ``max_size``.
    No timeout, no health check, no error handling.
    """

    def __init__(self, connect: Callable[[], Any], max_size: int) -> None:
        self._connect = connect
        self._room = max_size
        self._idle: deque[Any] = deque()
        self._waiters: deque[Waiter] = deque()

    def acquire(self) -> Any:
        if self._idle:
            return self._idle.pop()
        if self._room:
            self._room -= 1
            return self._connect()
        waiter = Waiter()
        self._waiters.append(waiter)
        return waiter.get()

    def release(self, conn: Any) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.hub.loop.run_callback(waiter.switch, conn)
        else:
            self._idle.append(conn)


@contextlib.contextmanager
def queue_adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    queue: gevent.queue.Queue[Any] = gevent.queue.Queue()
    for _ in range(max_size):
        queue.put_nowait(connect())
    yield queue.get, queue.put_nowait


POOLS = [
    PoolSpec("connpool Pool(gevent)", "subject", connpool_adapter("gevent"), ("connpool",)),
    PoolSpec("minimal fair pool", "reference", minimal_adapter(MinimalFairPool)),
    PoolSpec("gevent.queue.Queue pool", "recipe", queue_adapter, ("gevent",)),
    *full_featured_sync(" (patched)"),
    PoolSpec("deque floor", "floor", deque_floor, unbounded=True),
]
