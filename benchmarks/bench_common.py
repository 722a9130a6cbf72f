"""Shared pieces of the benchmark suite: settings, stand-in connections, statistics, result records.

Nothing here imports a concurrency library, so every runtime module (threading, gevent,
eventlet, asyncio, trio) can use it, including the monkey-patched ones.

Vocabulary used throughout the suite:

* *workload* - ``uncontended`` (one worker, acquire+release loop), ``contended`` (many
  workers, pool of ``POOL_SIZE``, one yield per cycle) or ``io`` (same as contended, but a
  TCP round trip to an in-process echo server per cycle, over connections the pool opened).
* *kind* of a pool entry:
    - ``subject``: connpool itself, with its defaults;
    - ``variant``: connpool with a documented opt-out (trio's ``checkpoint=False``), shown
      for the numbers behind a target the default cannot meet; never a "best other";
    - ``library``: a pool a user would install instead (psycopg_pool, SQLAlchemy, ...);
    - ``recipe``: the do-it-yourself pool users write on that runtime (a gevent queue, a trio
      memory channel);
    - ``reference``: the suite's *minimal fair pool* for that runtime (an idle deque plus a FIFO
      of waiters with direct hand-off, no timeout, no health checks, nothing else);
    - ``floor``: a bare ``collections.deque`` with ``pop``/``append`` holding as many
      connections as there are workers, so nobody ever waits. It measures the cost of the
      workload loop itself; in the ``io`` workload it amounts to a dedicated connection per
      worker without any pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import operator
import platform
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

POOL_SIZE = 10  # max_size of every bounded pool
CONTENDED_TASKS = 200  # workers on green and async runtimes
CONTENDED_THREADS = 16  # workers on the threading runtime
MESSAGE = b"connpool-benchmark-ping-32bytes\n"  # one TCP round trip sends and receives this
BATCH = 200  # uncontended loop: iterations between two clock reads
ENDPOINT = "bench"  # generic-connection-pool needs an endpoint key

WORKLOADS = ("uncontended", "contended", "io")
KINDS = ("subject", "variant", "library", "recipe", "reference", "floor")

# Measurement phases, read by every worker after each cycle.
WARMUP, MEASURE, STOP = 0, 1, 2


@dataclasses.dataclass
class Settings:
    """What one runtime process measures and for how long."""

    duration: float = 1.0
    warmup: float = 0.3
    workloads: tuple[str, ...] = WORKLOADS
    only: tuple[str, ...] = ()  # substrings of pool names; empty = all
    hang_timeout: float = 20.0  # a measurement that does not finish by then is reported as hung
    repeat: int = 1  # rounds over the line-up; each pool keeps its best round

    def wants(self, pool_name: str) -> bool:
        return not self.only or any(part in pool_name for part in self.only)


@dataclasses.dataclass
class PoolSpec:
    """One entry of a runtime's line-up.

    ``factory(connect, max_size)`` is a context manager (``async with`` on async runtimes)
    that builds the pool around ``connect`` and yields ``(acquire, release)``: ``acquire()``
    returns (or, async, resolves to) a connection, ``release(conn)`` gives it back (it may
    return an awaitable on async runtimes, which is then awaited). ``dists`` are the
    distributions whose versions are reported. ``unbounded`` entries are sized to the number of
    workers instead of ``POOL_SIZE`` (the floor).
    """

    name: str
    kind: str
    factory: Callable[..., Any]
    dists: tuple[str, ...] = ()
    note: str = ""
    unbounded: bool = False


# --------------------------------------------------------------------------- stand-ins


class Conn:
    """A stand-in connection: no I/O, just the methods pools like to call."""

    closed = False

    def close(self) -> None:
        self.closed = True

    def rollback(self) -> None:
        pass


class Connector:
    """Wraps a connect function and remembers every connection it made, for cleanup."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self.made: list[Any] = []

    def __call__(self) -> Any:
        conn = self._connect()
        self.made.append(conn)
        return conn

    async def aconnect(self) -> Any:
        conn = await self._connect()
        self.made.append(conn)
        return conn


@contextlib.contextmanager
def deque_floor(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    """The floor on sync runtimes: ``deque.pop`` / ``deque.append``, prefilled, never waits."""
    idle = deque(connect() for _ in range(max_size))
    yield idle.pop, idle.append


Factory = Callable[[Callable[[], Any], int], contextlib.AbstractContextManager[tuple[Any, Any]]]


def connpool_adapter(backend: str) -> Factory:
    """The subject on a sync runtime: ``connpool.Pool`` on ``backend``."""

    @contextlib.contextmanager
    def adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
        from connpool import Pool

        with Pool(connect, backend=backend, max_size=max_size) as pool:
            yield pool.acquire, pool.release

    return adapter


def minimal_adapter(pool_class: Callable[[Callable[[], Any], int], Any]) -> Factory:
    """The reference on a sync runtime: that runtime's minimal fair pool class."""

    @contextlib.contextmanager
    def adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
        pool = pool_class(connect, max_size)
        yield pool.acquire, pool.release

    return adapter


@contextlib.contextmanager
def sqlalchemy_adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    """SQLAlchemy's ``QueuePool`` (threading, and gevent/eventlet under monkey-patching)."""
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(connect, pool_size=max_size, max_overflow=0)
    try:
        # checkout returns a _ConnectionFairy proxy; fairy.close() checks it back in.
        yield pool.connect, operator.methodcaller("close")
    finally:
        pool.dispose()


def psycopg_standin_base() -> type:
    """What psycopg_pool reads of a ``connection_class`` instance, around a benchmark connection.

    psycopg_pool needs no database: ``ConnectionPool(connection_class=...)`` accepts any
    class with a ``connect(conninfo, **kwargs)`` class method, and the pool only touches
    ``pgconn.transaction_status``, ``close()`` and a few private attributes it sets itself.
    Its ``getconn`` / ``putconn`` code path is the real one (lock, waiting queue, expiry
    check, stats). The sync and async stand-ins add ``connect``, ``close`` and the context
    manager methods their pool calls.
    """
    from psycopg.pq import TransactionStatus

    class PgStatus:
        transaction_status = TransactionStatus.IDLE

    class StandIn:
        pgconn = PgStatus()

        def __init__(self, raw: Any) -> None:
            self._pool = None
            self.raw = raw
            self.roundtrip = getattr(raw, "roundtrip", None)

    return StandIn


def _psycopg_standin(connect: Callable[[], Any]) -> type:
    """A class psycopg_pool accepts as ``connection_class``, wrapping ``connect()``'s objects."""

    base = psycopg_standin_base()

    class StandInConnection(base):
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
    """psycopg_pool's ``ConnectionPool`` (threading, and gevent/eventlet under monkey-patching)."""
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
    """ProxyPatternPool's ``Pool``: threads, and greenlets under monkey-patching."""
    from ProxyPatternPool import Pool

    pool = Pool(lambda _number: connect(), max_size=max_size)
    try:
        yield pool.get, pool.ret
    finally:
        pool.shutdown()


@contextlib.contextmanager
def generic_adapter(connect: Callable[[], Any], max_size: int) -> Iterator[tuple[Any, Any]]:
    """generic-connection-pool, threading flavour (cooperative under monkey-patching)."""
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


PSYCOPG = ("psycopg-pool", "psycopg")
GENERIC = ("generic-connection-pool",)
STANDIN_NOTE = "psycopg_pool with a stand-in connection_class (no database; see bench_common)"


def full_featured_sync(suffix: str = "") -> list[PoolSpec]:
    """The full-featured pools built on ``threading``: psycopg_pool, SQLAlchemy,
    ProxyPatternPool and generic-connection-pool. gevent and eventlet applications run them
    too once the process is monkey-patched (``suffix`` then says so in their names)."""
    return [
        PoolSpec(f"psycopg_pool ConnectionPool{suffix}", "library", psycopg_adapter, PSYCOPG, STANDIN_NOTE),
        PoolSpec(f"sqlalchemy QueuePool{suffix}", "library", sqlalchemy_adapter, ("sqlalchemy",)),
        PoolSpec(f"ProxyPatternPool Pool{suffix}", "library", proxypattern_adapter, ("proxypatternpool",)),
        PoolSpec(f"generic-connection-pool{suffix}", "library", generic_adapter, GENERIC),
    ]


# --------------------------------------------------------------------------- statistics


def jain_index(counts: list[int]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1.0 = perfectly even, 1/n = one worker did all."""
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if not counts or squares == 0:
        return None
    return total * total / (len(counts) * squares)


def wait_summary(waits: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of acquire wait times (seconds in), in microseconds."""
    if not waits:
        return {"wait_p50_us": None, "wait_p99_us": None, "wait_max_us": None}
    waits.sort()
    last = len(waits) - 1
    return {
        "wait_p50_us": waits[round(0.50 * last)] * 1e6,
        "wait_p99_us": waits[round(0.99 * last)] * 1e6,
        "wait_max_us": waits[last] * 1e6,
    }


def result(
    spec: PoolSpec,
    workload: str,
    runtime: str,
    *,
    ops: float | None = None,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-ready record of one (runtime, workload, pool) measurement."""
    record: dict[str, Any] = {
        "runtime": runtime,
        "workload": workload,
        "pool": spec.name,
        "kind": spec.kind,
        "note": spec.note,
        "ops_per_s": ops,
        "wait_p50_us": None,
        "wait_p99_us": None,
        "wait_max_us": None,
        "fairness": None,
        "workers": None,
        "error": error,
        "teardown_error": None,
    }
    record.update(extra)
    return record


class Contention:
    """The state shared by the workers of one contended run, and what they report.

    Workers read ``phase`` after every cycle; each fills its own slot of ``counts``
    (cycles), ``waits`` (acquire waits, seconds) and ``last`` (``(t0, t1)`` around the
    acquire of its final cycle).
    """

    def __init__(self, acquire: Any, release: Any, use: Any, workers: int) -> None:
        self.acquire = acquire
        self.release = release
        self.use = use
        self.phase = WARMUP
        self.counts = [0] * workers
        self.waits: list[list[float]] = [[] for _ in range(workers)]
        self.last = [(0.0, 0.0)] * workers
        self.errors: list[BaseException] = []
        self.start = self.end = 0.0

    def open_window(self) -> None:
        self.phase = MEASURE
        self.start = time.perf_counter()

    def close_window(self) -> None:
        self.phase = STOP
        self.end = time.perf_counter()

    def settle(self) -> None:
        """Account for each worker's last cycle, the one during which the window closed.

        If its acquire returned before the window closed it is an ordinary cycle: counted,
        its wait recorded. If the worker was still waiting then, its wait so far
        (``end - t0``, a lower bound) is recorded: a worker that an unfair pool starves for the
        whole window never completes an acquire inside it, and would otherwise vanish from
        the wait figures.
        """
        for i, (t0, t1) in enumerate(self.last):
            if t1 <= self.end:
                self.counts[i] += 1
                self.waits[i].append(t1 - t0)
            elif t0 < self.end:
                self.waits[i].append(self.end - t0)

    def record(self, spec: PoolSpec, workload: str, runtime: str) -> dict[str, Any]:
        all_waits = [w for per_worker in self.waits for w in per_worker]
        return result(
            spec,
            workload,
            runtime,
            ops=sum(self.counts) / (self.end - self.start),
            fairness=jain_index(self.counts),
            workers=len(self.counts),
            **wait_summary(all_waits),
        )


def describe_error(exc: BaseException) -> str:
    """One line for the table; the traceback goes to stderr."""
    while getattr(exc, "exceptions", None):  # an exception group from a task group: its first leaf
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    if isinstance(exc, ImportError):
        return f"not available: {exc}"
    traceback.print_exception(exc, file=sys.stderr)
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:110]
    first = exc
    for _ in range(20):  # walk back to the first error of the chain: usually the informative one
        earlier = first.__cause__ or first.__context__
        if earlier is None:
            break
        first = earlier
    if first is not exc:
        text += f" [first: {type(first).__name__}: {first}"[:110] + "]"
    return text


def failed(
    spec: PoolSpec, workload: str, runtime: str, exc: BaseException, measured: list[dict[str, Any]]
) -> dict[str, Any]:
    """The record of a measurement that raised: its figures if it got that far (then the
    failure happened while closing the pool: ``teardown_error``), else just the ``error``."""
    if measured:
        measured[0]["teardown_error"] = describe_error(exc)
        return measured[0]
    return result(spec, workload, runtime, error=describe_error(exc))


def keep_best(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """Of the rounds of one measurement, the one with the highest ops/s (the least disturbed
    by the rest of the machine); a failure only when every round failed.

    The record also keeps every round's ops/s in order (``round_ops``, ``None`` for a failed
    round), so that the report can pair each round of two pools, measured moments apart.
    """
    good = [r for r in tries if not r["error"]]
    best = dict(max(good, key=lambda r: r["ops_per_s"]) if good else tries[-1])
    best["rounds"] = len(tries)
    best["round_ops"] = [None if r["error"] else r["ops_per_s"] for r in tries]
    return best


def log(message: str) -> None:
    """Progress output of a runtime process (stderr, so stdout stays clean)."""
    print(message, file=sys.stderr, flush=True)


def progress(record: dict[str, Any]) -> None:
    if record["error"]:
        log(f"  {record['workload']:<12} {record['pool']:<34} {record['error']}")
    else:
        extra = ""
        p99, fairness = record["wait_p99_us"], record["fairness"]
        if p99 is not None or fairness is not None:  # either can be missing (no wait, no full cycle)
            extra = "  p99 " + ("-" if p99 is None else f"{p99:.0f} us")
            extra += "  fairness " + ("-" if fairness is None else f"{fairness:.3f}")
        if record["teardown_error"]:
            extra += f"  (close failed: {record['teardown_error']})"
        log(f"  {record['workload']:<12} {record['pool']:<34} {record['ops_per_s']:>12,.0f} ops/s{extra}")


def versions(dists: list[str]) -> dict[str, str]:
    """Python and the installed versions of the given distributions."""
    found = {"python": platform.python_version() + f" ({platform.python_implementation()})"}
    for name in dists:
        if name in found:
            continue
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def now() -> float:
    return time.perf_counter()
