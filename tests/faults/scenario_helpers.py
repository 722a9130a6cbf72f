"""What the fault scenarios share: tracking connectors, echo round trips, loads, invariant checks.

The scenarios (``test_scenarios_sync.py``, ``test_scenarios_async.py``) and
``measure_recovery.py`` put a real pool in front of a :class:`FaultProxy` in
front of an :class:`EchoServer`, break things, and then check two promises:

*Nothing lost.*  Once the dust settles: ``size == idle + in_use``,
``in_use == 0``, ``waiting == 0``, ``connecting == 0``, ``min_size <= size
<= max_size``; every socket the pool ever opened is either still in the pool
or closed (the tracking connectors keep a reference to each, so the garbage
collector cannot close a leaked one behind the test's back); ``max_size``
checkouts at once each do a round trip (no capacity slot was lost); and after
``close()`` every socket is closed and the proxy and the echo server hold no
connection.  :func:`settled_problems` is the pure check; the sync and async
twins only differ in how they wait.

*Serves again within one backoff step of recovery.*  Failed connects are
retried after ``backoff_initial * 2**(failures-1)`` seconds, capped at
``backoff_max`` and jittered down to half of that (``Core.connect_failed``).
While workers sleep in backoff, a new waiter starts no connect of its own
(their slots count in ``connecting``), so after the fault ends the first
success comes at most one capped backoff step (plus a connect and a round
trip) later.  The pool takes no parameter for the backoff; the tests set the
core's two attributes with :func:`configure_backoff` so that a step is short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from typing import Any, Literal

import anyio

from connpool import PoolTimeout
from connpool.net import AsyncStream, AsyncTCPConnector, Stream, TCPConnector

from ._originals import poll, wait_until, wait_until_async
from .echo import EchoServer
from .proxy import FaultProxy

__all__ = [
    "ACQUIRE_TIMEOUT",
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "CONNECT_TIMEOUT",
    "LONG",
    "MARGIN",
    "AsyncLoad",
    "AsyncTrackingConnector",
    "ConnectLog",
    "CyclePlan",
    "Outage",
    "PeerClosed",
    "Recovery",
    "SyncLoad",
    "Tally",
    "TrackingConnector",
    "aassert_all_closed",
    "aassert_capacity",
    "acheck_nothing_lost",
    "asettle",
    "assert_all_closed",
    "assert_capacity",
    "backoff_max_of",
    "check_nothing_lost",
    "cut_seen",
    "configure_backoff",
    "echo_roundtrip",
    "aecho_roundtrip",
    "outage_begin",
    "outage_end",
    "plan_storm",
    "recovery_bound",
    "settle",
    "settled_problems",
    "summarize",
    "storm_faults",
]

#: A wait that is never meant to expire (it only bounds a hang).
LONG = 10.0
#: Scheduling slack on a loaded CI machine, added to every time bound.
MARGIN = 1.0
#: Backoff used by the scenarios (see :func:`configure_backoff`).
BACKOFF_INITIAL = 0.01
BACKOFF_MAX = 0.2
#: ``connect_timeout`` of the pools and timeout of their connectors.
CONNECT_TIMEOUT = 1.0
#: How long a load worker's ``acquire`` waits before it gives up (and retries).
ACQUIRE_TIMEOUT = 0.2


# ------------------------------------------------------------------ backoff


def configure_backoff(pool: Any, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX) -> float:
    """Make the pool's reconnect backoff start at ``initial`` and stop growing at ``maximum``; returns it.

    ``Pool``/``AsyncPool`` take no parameter for it (``Core`` does:
    ``backoff_initial=0.05``, ``backoff_max=5.0``), so the test sets the two
    attributes of the pool's core before the pool opens.  Fails loudly if
    they are renamed.
    """
    core = pool._core
    for attribute in ("backoff_initial", "backoff_max"):
        assert isinstance(getattr(core, attribute, None), (int, float)), (
            f"the pool core has no {attribute} any more"
        )
    core.backoff_initial = initial
    core.backoff_max = maximum
    return maximum


def backoff_max_of(pool: Any) -> float:
    """The cap of the pool's reconnect backoff."""
    return float(pool._core.backoff_max)


def recovery_bound(backoff_max: float, extra: float = 0.0) -> float:
    """How long after a fault ends the pool may take to serve again: one capped step, plus slack."""
    return backoff_max + extra + MARGIN


# ---------------------------------------------------------- tracking connectors


@dataclasses.dataclass
class ConnectLog:
    """Every connection a pool opened (kept referenced: a leak stays visible) and every attempt."""

    streams: list[Any] = dataclasses.field(default_factory=list)
    #: ``(seconds, error or None)`` of each finished attempt, interrupted ones included.
    attempts: list[tuple[float, BaseException | None]] = dataclasses.field(default_factory=list)

    def open_streams(self) -> list[Any]:
        """Streams not closed yet."""
        return [stream for stream in self.streams if not stream.closed]

    def failed_attempts(self) -> list[tuple[float, BaseException]]:
        return [(seconds, error) for seconds, error in self.attempts if error is not None]


class TrackingConnector(TCPConnector):
    """A :class:`TCPConnector` that records what it opened in a :class:`ConnectLog`."""

    def __init__(self, address: tuple[str, int], log: ConnectLog, **kwargs: Any) -> None:
        super().__init__(*address, **kwargs)
        self.log = log

    def connect(self) -> Stream:
        started = time.monotonic()
        try:
            stream = super().connect()
        except BaseException as exc:
            self.log.attempts.append((time.monotonic() - started, exc))
            raise
        self.log.attempts.append((time.monotonic() - started, None))
        self.log.streams.append(stream)
        return stream


class AsyncTrackingConnector(AsyncTCPConnector):
    """An :class:`AsyncTCPConnector` that records what it opened in a :class:`ConnectLog`."""

    def __init__(self, address: tuple[str, int], log: ConnectLog, **kwargs: Any) -> None:
        super().__init__(*address, **kwargs)
        self.log = log

    async def connect(self) -> AsyncStream:
        started = time.monotonic()
        try:
            stream = await super().connect()
        except BaseException as exc:
            self.log.attempts.append((time.monotonic() - started, exc))
            raise
        self.log.attempts.append((time.monotonic() - started, None))
        self.log.streams.append(stream)
        return stream


# ------------------------------------------------------------------ round trips


class PeerClosed(ConnectionError):
    """End of stream in the middle of a round trip (an ``OSError``: the pool discards the connection)."""


def _payload(tag: object) -> bytes:
    return f"<{tag}>".encode()


def echo_roundtrip(stream: Stream, tag: object) -> None:
    """Send a payload naming ``tag`` and read it back (``PeerClosed`` on end of stream)."""
    payload = _payload(tag)
    stream.send_all(payload)
    received = b""
    while len(received) < len(payload):
        chunk = stream.receive()
        if not chunk:
            raise PeerClosed(f"end of stream after {received!r}")
        received += chunk
    assert received == payload, f"sent {payload!r}, got {received!r}: crossed or stale connection"


async def aecho_roundtrip(stream: AsyncStream, tag: object) -> None:
    """The async twin of :func:`echo_roundtrip`."""
    payload = _payload(tag)
    await stream.send_all(payload)
    received = b""
    while len(received) < len(payload):
        chunk = await stream.receive()
        if not chunk:
            raise PeerClosed(f"end of stream after {received!r}")
        received += chunk
    assert received == payload, f"sent {payload!r}, got {received!r}: crossed or stale connection"


def cut_seen(stream: Any) -> bool:
    """Whether the kernel already reports the peer's RST or FIN on ``stream`` (peeks nothing)."""
    with contextlib.suppress(OSError, ValueError):
        fd = stream.socket.fileno()
        if fd < 0:
            return True  # the runtime saw it first and closed its transport (asyncio)
        probe = poll()
        probe.register(fd, 0x001 | 0x008 | 0x010)  # POLLIN | POLLERR | POLLHUP
        return bool(probe.poll(0))
    return True


# ------------------------------------------------------------------ outcomes


class Tally:
    """Outcomes of many cycles: counts by kind, plus the unexpected errors themselves.

    Only ``list.append`` is used while cycles run: atomic from threads too.
    """

    def __init__(self) -> None:
        self._kinds: list[str] = []
        self.unexpected: list[BaseException] = []

    @property
    def counts(self) -> Counter[str]:
        return Counter(self._kinds)

    def add(self, kind: str) -> None:
        self._kinds.append(kind)

    def error(self, exc: BaseException, interrupts: tuple[type[BaseException], ...] = ()) -> None:
        """Count an error the pool may raise under faults, or keep one it must not."""
        if isinstance(exc, PoolTimeout):
            self.add("pool_timeout")
        elif isinstance(exc, OSError):
            self.add("connection_error")
        elif interrupts and isinstance(exc, interrupts):
            self.add("interrupted")
        else:
            self.unexpected.append(exc)

    @property
    def total(self) -> int:
        return len(self._kinds) + len(self.unexpected)


# --------------------------------------------------------------------- outages

Outage = Literal["server", "proxy"]


def outage_begin(kind: Outage, echo: EchoServer, proxy: FaultProxy) -> None:
    """``server``: the echo server dies (connections closed, its port refuses; the proxy
    still accepts and then resets).  ``proxy``: the address refuses connects and every
    connection is reset, as a host whose server process died."""
    if kind == "server":
        echo.stop()
    else:
        proxy.refuse()
        proxy.reset_all()


def outage_end(kind: Outage, echo: EchoServer, proxy: FaultProxy) -> None:
    if kind == "server":
        echo.restart()
    else:
        proxy.pass_through()


class Recovery:
    """Time from the end of a fault to the first successful acquire and round trip."""

    def __init__(self) -> None:
        self.started = math.inf
        self.first_success = math.inf

    def start(self) -> None:
        self.started = time.monotonic()

    def success(self, when: float | None = None) -> None:
        when = time.monotonic() if when is None else when
        if when >= self.started and when < self.first_success:
            self.first_success = when

    @property
    def seconds(self) -> float:
        return self.first_success - self.started


# ------------------------------------------------------------------ the loads


class _LoadBase:
    """Workers looping acquire + round trip + release; what each saw, with timestamps."""

    def __init__(self, pool: Any, workers: int, acquire_timeout: float) -> None:
        self.pool = pool
        self.workers = workers
        self.acquire_timeout = acquire_timeout
        self.running = False
        self.successes: list[list[float]] = [[] for _ in range(workers)]
        self.failures: list[list[float]] = [[] for _ in range(workers)]
        self.tally = Tally()
        self.stopped: list[int] = []  # workers that ended (appended: atomic from threads)
        self.recovery: Recovery | None = None

    def _ok(self, worker: int) -> None:
        now = time.monotonic()
        self.successes[worker].append(now)
        self.tally.add("ok")
        if self.recovery is not None:
            self.recovery.success(now)

    def _failed(self, worker: int, exc: BaseException) -> None:
        self.failures[worker].append(time.monotonic())
        self.tally.error(exc)

    def all_succeeded_since(self, since: float) -> bool:
        return all(times and times[-1] >= since for times in self.successes)

    def all_failed_since(self, since: float) -> bool:
        return all(times and times[-1] >= since for times in self.failures)


class SyncLoad(_LoadBase):
    """:class:`_LoadBase` on a sync pool: ``workers`` tasks of the pool's scheduler."""

    def start(self, sched: Any) -> None:
        self.running = True
        self.sched = sched
        self.handles = [sched.spawn(self._work, n) for n in range(self.workers)]

    def _work(self, worker: int) -> None:
        pool = self.pool
        cycle = 0
        try:
            while self.running:
                cycle += 1
                try:
                    with pool.connection(timeout=self.acquire_timeout) as conn:
                        echo_roundtrip(conn, f"w{worker}.{cycle}")
                except Exception as exc:
                    self._failed(worker, exc)
                    self.sched.sleep(0)  # an error may come without any switch: let others run
                else:
                    self._ok(worker)
        finally:
            self.stopped.append(worker)

    def stop(self, sleep: Callable[[float], object]) -> None:
        self.running = False
        assert wait_until(lambda: len(self.stopped) == self.workers, LONG, sleep), "load workers stuck"


class AsyncLoad(_LoadBase):
    """:class:`_LoadBase` on an async pool: ``workers`` tasks of a task group the caller owns."""

    def start(self, task_group: Any) -> None:
        self.running = True
        for n in range(self.workers):
            task_group.start_soon(self._work, n)

    async def _work(self, worker: int) -> None:
        pool = self.pool
        cycle = 0
        try:
            while self.running:
                cycle += 1
                try:
                    async with pool.connection(timeout=self.acquire_timeout) as conn:
                        await aecho_roundtrip(conn, f"w{worker}.{cycle}")
                except Exception as exc:
                    self._failed(worker, exc)
                    await anyio.sleep(0)  # an error may come without any checkpoint: let others run
                else:
                    self._ok(worker)
        finally:
            self.stopped.append(worker)

    async def stop(self) -> None:
        self.running = False
        assert await wait_until_async(lambda: len(self.stopped) == self.workers, LONG, None), "workers stuck"


# ------------------------------------------------------------------ the storm


@dataclasses.dataclass(frozen=True)
class CyclePlan:
    """One cycle of the cancellation storm, drawn in advance from the seeded generator.

    ``acquire_timeout``: the ``acquire`` timeout (0: never wait).  ``hold``:
    seconds to keep the connection after the round trip.  ``interrupt``: how
    the cycle is cut short from outside, ``after`` seconds in: ``None``
    (timeouts only), ``"deadline"`` (the runtime's own timeout around the
    cycle: ``gevent.Timeout``, ``eventlet.Timeout``, a cancel scope deadline)
    or ``"kill"`` (``Greenlet.kill``, ``GreenThread.kill``, ``Task.cancel``,
    ``CancelScope.cancel``).
    """

    index: int
    acquire_timeout: float
    hold: float
    interrupt: Literal["deadline", "kill"] | None
    after: float


def plan_storm(rng: random.Random, cycles: int, *, interruptible: bool) -> list[CyclePlan]:
    """The storm's cycles; without ``interruptible`` (threads) timeouts are the only interruption."""
    plans = []
    for index in range(cycles):
        acquire_timeout = 0.0 if rng.random() < 0.15 else rng.uniform(0.0005, 0.03)
        hold = rng.choice((0.0, rng.uniform(0.0, 0.002), rng.uniform(0.0, 0.01)))
        interrupt: Literal["deadline", "kill"] | None = None
        if interruptible:
            interrupt = rng.choice((None, "deadline", "kill"))
        plans.append(CyclePlan(index, acquire_timeout, hold, interrupt, rng.uniform(0.0, 0.015)))
    return plans


def storm_faults(rng: random.Random, proxy: FaultProxy) -> Generator[float, None, None]:
    """The proxy's side of the storm, one fault per step; yields how long to wait before the next.

    Mostly ``reset_all``, sometimes ``close_all``, and now and then a short
    window in which new connections are reset as soon as they are accepted.
    Ends in ``pass_through`` whenever the caller stops iterating.
    """
    try:
        while True:
            roll = rng.random()
            if roll < 0.6:
                proxy.reset_all()
            elif roll < 0.8:
                proxy.close_all()
            else:
                proxy.reset_new()
                yield rng.uniform(0.001, 0.01)
                proxy.pass_through()
            yield rng.uniform(0.002, 0.02)
    finally:
        proxy.pass_through()


# ------------------------------------------------------------------ invariants


def settled_problems(stats: Any, log: ConnectLog | None) -> list[str]:
    """Why the pool is not (yet) in a settled, consistent state; empty when it is.

    Pure: ``stats`` is a :class:`connpool.PoolStats` snapshot taken while no
    caller holds or waits for a connection.
    """
    problems = []
    if stats.size != stats.idle + stats.in_use:
        problems.append(f"size {stats.size} != idle {stats.idle} + in_use {stats.in_use}")
    if stats.in_use:
        problems.append(f"{stats.in_use} connection(s) still checked out")
    if stats.waiting:
        problems.append(f"{stats.waiting} waiter(s) left")
    if stats.connecting:
        problems.append(f"{stats.connecting} connect slot(s) still taken")
    if stats.size > stats.max_size:
        problems.append(f"size {stats.size} above max_size {stats.max_size}")
    if stats.size < stats.min_size:
        problems.append(f"size {stats.size} below min_size {stats.min_size}")
    if log is not None:
        open_streams = len(log.open_streams())
        if open_streams != stats.size:
            problems.append(
                f"{open_streams} socket(s) open but the pool holds {stats.size}: "
                f"{open_streams - stats.size} lost without being closed"
            )
    return problems


def settle(pool: Any, log: ConnectLog | None, sleep: Callable[[float], object], timeout: float = LONG) -> Any:
    """Wait until :func:`settled_problems` finds nothing (background closes and refills take a
    moment), else fail with what is still wrong; returns the last snapshot."""
    assert wait_until(lambda: not settled_problems(pool.stats(), log), timeout, sleep), (
        f"pool not settled after {timeout} s: {settled_problems(pool.stats(), log)}; {pool.stats()}"
    )
    return pool.stats()


async def asettle(pool: Any, log: ConnectLog | None, timeout: float = LONG) -> Any:
    """The async twin of :func:`settle`."""
    assert await wait_until_async(lambda: not settled_problems(pool.stats(), log), timeout, None), (
        f"pool not settled after {timeout} s: {settled_problems(pool.stats(), log)}; {pool.stats()}"
    )
    return pool.stats()


def assert_capacity(pool: Any, timeout: float = LONG) -> None:
    """``max_size`` checkouts at once, each with a round trip: no capacity slot was lost."""
    held: list[Any] = []
    try:
        for n in range(pool.stats().max_size):
            conn = pool.acquire(timeout=timeout)
            held.append(conn)
            echo_roundtrip(conn, f"capacity.{n}")
        assert len({id(conn) for conn in held}) == len(held), "one connection handed out twice"
    finally:
        for conn in held:
            pool.release(conn)


async def aassert_capacity(pool: Any, timeout: float = LONG) -> None:
    """The async twin of :func:`assert_capacity`."""
    held: list[Any] = []
    try:
        for n in range(pool.stats().max_size):
            conn = await pool.acquire(timeout=timeout)
            held.append(conn)
            await aecho_roundtrip(conn, f"capacity.{n}")
        assert len({id(conn) for conn in held}) == len(held), "one connection handed out twice"
    finally:
        for conn in held:
            pool.release(conn)


def _closed_problems(log: ConnectLog) -> list[str]:
    still_open = log.open_streams()
    return [f"{len(still_open)} socket(s) left open after close(): {still_open}"] if still_open else []


def assert_all_closed(
    log: ConnectLog, proxy: FaultProxy, echo: EchoServer, sleep: Callable[[float], object]
) -> None:
    """After ``pool.close()``: every socket the pool opened is closed, and the servers see none."""
    assert not _closed_problems(log), _closed_problems(log)
    assert wait_until(lambda: proxy.live == 0 and echo.live == 0, LONG, sleep), (
        f"connections still open at the servers: proxy {proxy.live}, echo {echo.live}"
    )


async def aassert_all_closed(log: ConnectLog, proxy: FaultProxy, echo: EchoServer) -> None:
    """The async twin of :func:`assert_all_closed`."""
    assert not _closed_problems(log), _closed_problems(log)
    assert await wait_until_async(lambda: proxy.live == 0 and echo.live == 0, LONG, None), (
        f"connections still open at the servers: proxy {proxy.live}, echo {echo.live}"
    )


def check_nothing_lost(
    pool: Any, log: ConnectLog, proxy: FaultProxy, echo: EchoServer, sleep: Callable[[float], object]
) -> Any:
    """The whole "nothing lost" check, closing the pool; returns the settled snapshot from before."""
    stats = settle(pool, log, sleep)
    assert_capacity(pool)
    settle(pool, log, sleep)
    pool.close()
    assert_all_closed(log, proxy, echo, sleep)
    return stats


async def acheck_nothing_lost(pool: Any, log: ConnectLog, proxy: FaultProxy, echo: EchoServer) -> Any:
    """The async twin of :func:`check_nothing_lost`."""
    stats = await asettle(pool, log)
    await aassert_capacity(pool)
    await asettle(pool, log)
    await pool.close()
    await aassert_all_closed(log, proxy, echo)
    return stats


# ------------------------------------------------------------------ reports


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of ``values`` (seconds)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
