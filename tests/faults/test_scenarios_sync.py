"""Self-healing under faults: ``Pool`` on threading, gevent and eventlet.

``Pool(TrackingConnector)`` -> :class:`FaultProxy` -> :class:`EchoServer`,
every cycle a real echo round trip.  Each scenario breaks the path, checks
what callers see while it is broken, measures how soon the pool serves again
once it is repaired (within one capped reconnect backoff step), and ends with
the "nothing lost" check of ``scenario_helpers`` (gauges add up, no waiter,
slot or socket lost, every socket closed after ``close()``).  The async twin
is ``test_scenarios_async.py``.

Runtime differences, on purpose:

* threading has no asynchronous interruption: the pool's ``connect_timeout``
  is soft there (checked when ``connect`` returns), so the connector carries
  its own timeout, and the cancellation storm only uses ``acquire`` timeouts;
* gevent and eventlet interrupt at the next switch: the storm adds their
  ``Timeout`` around cycles and ``kill`` of the greenlets running them.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connpool import Pool, PoolStats, PoolTimeout
from connpool.backends import SyncScheduler
from connpool.net import Stream

from ._originals import wait_until
from .echo import EchoServer
from .proxy import FaultProxy
from .scenario_helpers import (
    ACQUIRE_TIMEOUT,
    BACKOFF_MAX,
    CONNECT_TIMEOUT,
    LONG,
    MARGIN,
    ConnectLog,
    CyclePlan,
    Outage,
    Recovery,
    SyncLoad,
    Tally,
    TrackingConnector,
    assert_all_closed,
    check_nothing_lost,
    configure_backoff,
    cut_seen,
    echo_roundtrip,
    outage_begin,
    outage_end,
    plan_storm,
    recovery_bound,
    settle,
    settled_problems,
    storm_faults,
)

pytestmark = pytest.mark.timeout(60)

SEED = int(os.environ.get("CONNPOOL_FAULT_SEED", "20240607"))
STORM_CYCLES = int(os.environ.get("CONNPOOL_FAULT_STORM_CYCLES", "1500"))
STORM_CONCURRENCY = 16


def make_pool(
    sched: SyncScheduler,
    proxy: FaultProxy,
    log: ConnectLog,
    *,
    connector: TrackingConnector | None = None,
    connector_timeout: float = CONNECT_TIMEOUT,
    **kwargs: Any,
) -> Pool[Stream]:
    """A pool through the proxy, checking every checkout (``check_after=0``), with a short backoff."""
    if connector is None:
        connector = TrackingConnector(proxy.address, log, timeout=connector_timeout, backend=sched.name)
    kwargs.setdefault("check_after", 0)
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
    kwargs.setdefault("timeout", LONG)
    pool: Pool[Stream] = Pool(connector, backend=sched.name, **kwargs)
    configure_backoff(pool)
    return pool


# ================================================================ 1. down at start


def test_server_down_at_start(
    sched: SyncScheduler,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    record_property: Callable[[str, object], None],
) -> None:
    proxy.refuse()
    with make_pool(sched, proxy, log, min_size=2, max_size=4) as pool:
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            pool.acquire(timeout=0.3)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 0.3 + MARGIN
        assert isinstance(info.value.__cause__, ConnectionRefusedError), repr(info.value.__cause__)
        with pytest.raises(PoolTimeout, match="cannot connect"):
            pool.acquire(timeout=0)  # never waits
        stats = pool.stats()
        assert stats.size == 0
        assert stats.connect_errors >= 1
        assert stats.waiting == 0

        # A patient caller waits across the repair: it must not be stranded.
        recovery = Recovery()
        outcome: list[object] = []

        def patient() -> None:
            try:
                with pool.connection(timeout=LONG) as conn:
                    echo_roundtrip(conn, "patient")
            except BaseException as exc:
                outcome.append(exc)
            else:
                recovery.success()
                outcome.append("served")

        sched.spawn(patient)
        assert wait_until(lambda: pool.stats().waiting == 1, LONG, sched.sleep)
        recovery.start()
        proxy.pass_through()
        assert wait_until(lambda: bool(outcome), LONG, sched.sleep)
        assert outcome == ["served"]
        record_property("recovery_seconds", recovery.seconds)
        assert recovery.seconds < recovery_bound(BACKOFF_MAX)
        pool.wait(timeout=LONG)  # fills to min_size
        check_nothing_lost(pool, log, proxy, echo, sched.sleep)


# ================================================================ 2. restart under load


@pytest.mark.parametrize("outage", ["server", "proxy"])
def test_server_restarted_under_load(
    sched: SyncScheduler,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    outage: Outage,
    record_property: Callable[[str, object], None],
) -> None:
    with make_pool(sched, proxy, log, min_size=1, max_size=3) as pool:
        load = SyncLoad(pool, workers=6, acquire_timeout=ACQUIRE_TIMEOUT)
        load.start(sched)
        try:
            since = time.monotonic()
            assert wait_until(lambda: load.all_succeeded_since(since), LONG, sched.sleep)
            down = time.monotonic()
            outage_begin(outage, echo, proxy)
            assert wait_until(lambda: load.all_failed_since(down), LONG, sched.sleep), load.tally.counts
            recovery = load.recovery = Recovery()
            recovery.start()
            outage_end(outage, echo, proxy)
            every_worker = recovery_bound(BACKOFF_MAX, ACQUIRE_TIMEOUT)
            assert wait_until(
                lambda: load.all_succeeded_since(recovery.started), every_worker, sched.sleep
            ), f"not every worker served again within {every_worker:.2f} s: {load.tally.counts}"
        finally:
            load.stop(sched.sleep)
        record_property("recovery_seconds", recovery.seconds)
        assert recovery.seconds < recovery_bound(BACKOFF_MAX)
        assert not load.tally.unexpected, load.tally.unexpected  # only PoolTimeout and connection errors
        assert load.tally.counts["pool_timeout"] + load.tally.counts["connection_error"] > 0
        check_nothing_lost(pool, log, proxy, echo, sched.sleep)


# ================================================================ 3. cut while idle


@pytest.mark.parametrize("cut", ["reset_all", "close_all"])
def test_connections_cut_while_idle(
    sched: SyncScheduler, echo: EchoServer, proxy: FaultProxy, log: ConnectLog, cut: str
) -> None:
    size = 3
    with make_pool(sched, proxy, log, min_size=size, max_size=size) as pool:
        pool.open(wait=True, timeout=LONG)
        idle = log.open_streams()
        assert len(idle) == size
        assert proxy.wait_live(size, sleep=sched.sleep)  # the proxy has accepted them all
        assert getattr(proxy, cut)() == size
        # The RSTs/FINs are sent; wait until the kernel has them on every idle socket.
        assert wait_until(lambda: all(cut_seen(stream) for stream in idle), LONG, sched.sleep)
        held = []
        try:
            for n in range(size):  # held together: every dead idle one is checked out and discarded
                conn = pool.acquire(timeout=LONG)
                held.append(conn)
                assert all(conn is not dead for dead in idle), "a dead socket was handed out"
                echo_roundtrip(conn, n)
        finally:
            for conn in held:
                pool.release(conn)
        assert pool.stats().discarded == size
        # discarded, closed in the background
        assert wait_until(lambda: all(stream.closed for stream in idle), LONG, sched.sleep)
        check_nothing_lost(pool, log, proxy, echo, sched.sleep)


# ================================================================ 4. cut while in use


@pytest.mark.parametrize("cut", ["reset_all", "close_all"])
def test_connection_cut_while_in_use(
    sched: SyncScheduler, echo: EchoServer, proxy: FaultProxy, log: ConnectLog, cut: str
) -> None:
    with make_pool(sched, proxy, log, min_size=1, max_size=2) as pool:
        pool.open(wait=True, timeout=LONG)
        with pytest.raises(OSError):  # the cut happens inside the block
            with pool.connection(timeout=LONG) as conn:
                echo_roundtrip(conn, "before")
                assert getattr(proxy, cut)() == 1
                echo_roundtrip(conn, "after")
        assert wait_until(lambda: conn.closed, LONG, sched.sleep)  # discarded, closed in the background
        stats = settle(pool, log, sched.sleep)  # refilled to min_size
        assert stats.discarded == 1
        assert stats.idle == 1
        with pool.connection(timeout=LONG) as again:
            assert again is not conn
            echo_roundtrip(again, "again")
        check_nothing_lost(pool, log, proxy, echo, sched.sleep)


def test_release_of_a_connection_close_forced_is_accepted(
    sched: SyncScheduler, echo: EchoServer, proxy: FaultProxy, log: ConnectLog
) -> None:
    """``close(timeout)`` cuts a connection still in use; its holder, woken by the cut, gives it back.

    That happens while ``close()`` is still finishing (here: while the close hook runs, which
    waits for the holder); the release must be accepted silently, as after ``close()``.  In
    practice gevent wakes a greenlet reading from the socket as soon as it is closed, so a
    request in flight at shutdown hits this whenever the server is slow (stalled).  Regression
    test: ``release()`` used to raise ``ValueError`` ("not checked out from this pool") here.
    """
    closed_by_pool = sched.event()
    released = sched.event()

    class SignallingConnector(TrackingConnector):
        def close(self, conn: Stream) -> None:
            super().close(conn)
            closed_by_pool.set()
            released.wait(LONG)  # the holder reacts before close() finishes

    connector = SignallingConnector(proxy.address, log, timeout=CONNECT_TIMEOUT, backend=sched.name)
    pool = make_pool(sched, proxy, log, connector=connector, max_size=1)
    conn = pool.acquire(timeout=LONG)
    echo_roundtrip(conn, "in use")
    outcome: list[object] = []

    def holder() -> None:
        closed_by_pool.wait(LONG)
        try:
            pool.release(conn)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append("released")
        finally:
            released.set()

    sched.spawn(holder)
    pool.close(timeout=0.05)
    assert wait_until(lambda: bool(outcome), LONG, sched.sleep)
    assert outcome == ["released"]
    assert conn.closed
    assert_all_closed(log, proxy, echo, sched.sleep)


# ================================================================ 5. blackholed server


def test_blackholed_server(
    sched: SyncScheduler,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    record_property: Callable[[str, object], None],
) -> None:
    connect_timeout = 0.3
    # On threading the pool's connect_timeout is soft: the connector must bound connect itself.
    # Elsewhere the pool interrupts a connect its connector would let hang for LONG.
    connector_timeout = connect_timeout if sched.name == "threading" else LONG
    proxy.blackhole()
    pool = make_pool(
        sched, proxy, log, max_size=2, connect_timeout=connect_timeout, connector_timeout=connector_timeout
    )
    with pool:
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            pool.acquire(timeout=0.8)
        elapsed = time.monotonic() - started
        assert 0.75 <= elapsed < 0.8 + MARGIN
        assert isinstance(info.value.__cause__, TimeoutError), repr(info.value.__cause__)
        # Nobody needs a connection any more: the attempt in flight ends and frees its slot.
        assert wait_until(lambda: pool.stats().connecting == 0, connect_timeout + MARGIN, sched.sleep)
        failed = log.failed_attempts()
        assert failed
        for seconds, error in failed:
            assert seconds < connect_timeout + 0.5, f"a connect lasted {seconds:.2f} s: {error!r}"

        recovery = Recovery()
        recovery.start()
        proxy.pass_through()
        with pool.connection(timeout=LONG) as conn:
            echo_roundtrip(conn, "through")
        recovery.success()
        record_property("recovery_seconds", recovery.seconds)
        # a connect hanging when the hole closed ends within connect_timeout, then one backoff step
        assert recovery.seconds < recovery_bound(BACKOFF_MAX, connect_timeout)
        check_nothing_lost(pool, log, proxy, echo, sched.sleep)


class SlowFirstConnector(TrackingConnector):
    """Its first connect succeeds, but only after ``delay`` seconds (a slow TLS or auth handshake).

    Interrupted while slow (gevent/eventlet ``Timeout``), it closes what it
    opened, as ``connect_tcp`` does for its own handshake.
    """

    def __init__(self, *args: Any, sched: SyncScheduler, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sched = sched
        self.delay = delay
        self.slow = 1

    def connect(self) -> Stream:
        stream = super().connect()
        if self.slow:
            self.slow -= 1
            try:
                self.sched.sleep(self.delay)
            except BaseException:
                stream.close()
                raise
        return stream


def test_connect_slower_than_connect_timeout_is_not_leaked(
    sched: SyncScheduler, echo: EchoServer, proxy: FaultProxy, log: ConnectLog
) -> None:
    """A connect that outlasts ``connect_timeout`` counts as failed: what it opened must be closed.

    gevent and eventlet interrupt the slow connect (the connector closes its socket); on
    threading the timeout is soft and fires once ``connect()`` has returned, so the pool
    itself must close the connection.  Regression test: threading used to drop it unclosed.
    """
    connector = SlowFirstConnector(
        proxy.address, log, timeout=LONG, backend=sched.name, sched=sched, delay=0.3
    )
    with make_pool(sched, proxy, log, connector=connector, max_size=1, connect_timeout=0.1) as pool:
        with pool.connection(timeout=LONG) as conn:
            echo_roundtrip(conn, "second attempt")
        assert pool.stats().connect_errors == 1
        settle(pool, log, sched.sleep, timeout=1.0)
        check_nothing_lost(pool, log, proxy, echo, sched.sleep)


# ================================================================ 6. cancellation storm


class GreenKit:
    """The interruptions a green runtime offers: its ``Timeout`` and killing a green thread."""

    def __init__(self, name: str) -> None:
        import greenlet

        self.name = name
        self.killed: type[BaseException] = greenlet.GreenletExit
        if name == "gevent":
            import gevent

            self.runtime: Any = gevent
        else:
            import eventlet

            self.runtime = eventlet
        self.interrupts: tuple[type[BaseException], ...] = (self.runtime.Timeout,)

    def deadline(self, seconds: float) -> Any:
        """``gevent.Timeout`` / ``eventlet.Timeout``: raised in this green thread after ``seconds``."""
        return self.runtime.Timeout(seconds)

    def spawn(self, fn: Callable[..., object], *args: Any) -> Any:
        return self.runtime.spawn(fn, *args)

    def kill(self, thread: Any) -> None:
        """``Greenlet.kill`` / ``GreenThread.kill``: ``GreenletExit`` at its current switch point."""
        thread.kill()


def run_cycle(
    pool: Pool[Stream], plan: CyclePlan, tally: Tally, sched: SyncScheduler, kit: GreenKit | None
) -> None:
    """One storm cycle: acquire (short timeout), round trip, maybe hold, release -- maybe interrupted."""
    interrupts = kit.interrupts if kit is not None else ()
    try:
        deadline = kit.deadline(plan.after) if kit is not None and plan.interrupt == "deadline" else None
        with deadline if deadline is not None else contextlib.nullcontext():
            with pool.connection(timeout=plan.acquire_timeout) as conn:
                echo_roundtrip(conn, f"c{plan.index}")
                if plan.hold:
                    sched.sleep(plan.hold)
    except BaseException as exc:
        if kit is not None and isinstance(exc, kit.killed):
            tally.add("killed")
            raise
        tally.error(exc, interrupts)
    else:
        tally.add("ok")


def test_cancellation_storm(
    sched: SyncScheduler,
    echo: EchoServer,
    proxy: FaultProxy,
    log: ConnectLog,
    record_property: Callable[[str, object], None],
) -> None:
    kit = None if sched.name == "threading" else GreenKit(sched.name)
    plans = plan_storm(random.Random(SEED), STORM_CYCLES, interruptible=kit is not None)
    tally = Tally()
    pending: Iterator[CyclePlan] = iter(plans)
    finished: list[None] = []  # appended by each worker as it ends (atomic from threads)
    faulting = True

    def worker() -> None:
        try:
            for plan in pending:
                if kit is not None and plan.interrupt == "kill":
                    thread = kit.spawn(run_cycle, pool, plan, tally, sched, kit)
                    sched.sleep(plan.after)
                    kit.kill(thread)
                    if not wait_until(lambda: bool(thread.dead), LONG, sched.sleep):
                        tally.unexpected.append(AssertionError(f"cycle {plan.index} survived kill()"))
                else:
                    run_cycle(pool, plan, tally, sched, kit)
        except BaseException as exc:  # a spawned task's error would only be logged
            tally.unexpected.append(exc)
        finally:
            finished.append(None)

    def fault_loop() -> None:
        faults = storm_faults(random.Random(SEED + 1), proxy)
        try:
            for delay in faults:
                if not faulting:
                    break
                sched.sleep(delay)
        finally:
            faults.close()  # back to pass_through

    started = time.monotonic()
    with make_pool(sched, proxy, log, min_size=2, max_size=4) as pool:
        faulter = sched.spawn(fault_loop)
        for _ in range(STORM_CONCURRENCY):
            sched.spawn(worker)
        assert wait_until(lambda: len(finished) == STORM_CONCURRENCY, 30.0, sched.sleep), (
            f"storm stuck: {tally.counts}"
        )
        faulting = False
        assert faulter.join(LONG)
        record_property("storm", dict(tally.counts))
        record_property("storm_seconds", time.monotonic() - started)
        assert not tally.unexpected, f"seed {SEED}: {tally.unexpected[:5]}"
        assert tally.total <= len(plans)
        assert tally.counts["ok"] > 0, tally.counts
        assert tally.counts["pool_timeout"] > 0, tally.counts
        if kit is not None:
            assert tally.counts["interrupted"] + tally.counts["killed"] > 0, tally.counts
        check_nothing_lost(pool, log, proxy, echo, sched.sleep)


# ================================================================ the checks themselves


def test_settled_problems_names_every_kind_of_loss() -> None:
    """The pure check behind every scenario's "nothing lost" fails for each kind of loss."""

    class Sock:
        closed = False

    def snapshot(**changes: Any) -> PoolStats:
        numbers = {field: 0 for field in PoolStats.__dataclass_fields__ if field not in ("name", "backend")}
        numbers.update(min_size=1, max_size=4, size=2, idle=2)
        numbers.update(changes)
        return PoolStats(name=None, backend="threading", **numbers)

    log = ConnectLog(streams=[Sock(), Sock()])
    assert settled_problems(snapshot(), log) == []
    cases = {
        "checked out": snapshot(idle=1, in_use=1),  # a connection never returned
        "waiter": snapshot(waiting=1),  # a caller left waiting
        "connect slot": snapshot(connecting=1),  # capacity lost in a connect that never ended
        "size 2 != idle 1": snapshot(idle=1),
        "above max_size": snapshot(size=5, idle=5),
        "below min_size": snapshot(size=0, idle=0),
    }
    for words, stats in cases.items():
        assert any(words in problem for problem in settled_problems(stats, None)), words
    log.streams.append(Sock())  # opened, neither in the pool nor closed
    assert any("lost without being closed" in problem for problem in settled_problems(snapshot(), log))
