"""The pool's guarantees on the sync runtimes (threading, gevent, eventlet).

Every test runs once per sync backend enabled in this process (the ``sched``
fixture); gevent and eventlet run in processes of their own, patched and not.
"""

from __future__ import annotations

import pytest

from connpool import Pool, PoolClosed, PoolTimeout, TooManyWaiters

from .helpers import ArmedScheduler, Factory, FakeConn, Interrupt, assert_consistent, wait_until


@pytest.fixture
def factory() -> Factory:
    return Factory()


def make_pool(sched, factory, **kw) -> Pool:
    kw.setdefault("timeout", 5.0)
    return Pool(factory, backend=sched, **kw)


def spawn_acquirer(sched, pool, results, tag, *, timeout=5.0, hold=None):
    """A task that acquires, records (tag, conn or error), and releases when ``hold`` is set."""

    def run():
        try:
            conn = pool.acquire(timeout=timeout)
        except BaseException as exc:
            results.append((tag, exc))
            return
        results.append((tag, conn))
        if hold is not None:
            hold.wait(5)
        pool.release(conn)

    return sched.spawn(run)


# ------------------------------------------------------------------ basics


def test_connection_round_trip(sched, factory):
    with make_pool(sched, factory, max_size=2) as pool:
        with pool.connection() as conn:
            assert isinstance(conn, FakeConn)
            assert pool.stats().in_use == 1
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use, stats.acquired) == (1, 1, 0, 1)
        with pool.connection() as again:
            assert again is conn  # reused, not reopened
    assert conn.closed
    assert_consistent(sched, pool, factory)


def test_min_size_prefilled_in_background(sched, factory):
    pool = make_pool(sched, factory, min_size=3, max_size=5)
    pool.open(wait=True, timeout=5)
    assert pool.stats().idle == 3
    assert len(factory.made) == 3
    pool.close()
    assert factory.open_conns() == []


def test_open_wait_times_out_when_cannot_connect(sched):
    factory = Factory(fail=-1)
    pool = make_pool(sched, factory, min_size=1)
    with pytest.raises(PoolTimeout, match="cannot connect"):
        pool.open(wait=True, timeout=0.2)
    pool.close()


def test_max_size_is_a_hard_limit(sched, factory):
    with make_pool(sched, factory, max_size=2) as pool:
        a, b = pool.acquire(), pool.acquire()
        with pytest.raises(PoolTimeout, match="busy"):
            pool.acquire(timeout=0)
        with pytest.raises(PoolTimeout, match="busy"):
            pool.acquire(timeout=0.05)
        assert len(factory.made) == 2
        pool.release(a)
        pool.release(b)


def test_lifo_and_fifo_reuse(sched, factory):
    with make_pool(sched, factory, max_size=2) as pool:
        a, b = pool.acquire(), pool.acquire()
        pool.release(a)
        pool.release(b)
        with pool.connection() as conn:
            assert conn is b  # most recently returned first
    with make_pool(sched, factory, max_size=2, lifo=False) as pool:
        a, b = pool.acquire(), pool.acquire()
        pool.release(a)
        pool.release(b)
        with pool.connection() as conn:
            assert conn is a  # round-robin


# ---------------------------------------------------------- FIFO hand-off


def test_fifo_hand_off_no_overtaking(sched, factory):
    with make_pool(sched, factory, max_size=1) as pool:
        held = pool.acquire()
        results: list = []
        tasks = []
        for tag in range(4):
            tasks.append(spawn_acquirer(sched, pool, results, tag))
            wait_until(sched, lambda n=tag + 1: pool.stats().waiting == n)
        pool.release(held)
        # the connection went straight to the oldest waiter: a newcomer cannot take it
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0)
        for task in tasks:
            assert task.join(5)
        assert [tag for tag, _ in results] == [0, 1, 2, 3]
        assert all(conn is held for _, conn in results)
        assert_consistent(sched, pool, factory)


# ------------------------------------------------- no stranded waiter


def test_waiter_served_after_connect_failures(sched):
    factory = Factory(fail=2)
    with make_pool(sched, factory, max_size=1) as pool:
        conn = pool.acquire(timeout=5)
        assert factory.attempts == 3
        pool.release(conn)
        assert pool.stats().connect_errors == 2
        assert_consistent(sched, pool, factory)


def test_reconnect_failed_called_once_per_outage_and_attempts_go_on(sched):
    factory = Factory(fail=-1)
    calls: list = []
    with make_pool(sched, factory, min_size=1, reconnect_failed=calls.append, reconnect_timeout=0.1) as pool:
        wait_until(sched, lambda: calls)
        assert calls == [pool]
        errors = pool.stats().connect_errors
        wait_until(sched, lambda: pool.stats().connect_errors > errors + 1)  # still trying
        assert calls == [pool]  # once per outage
        factory.fail = 0  # the server is back
        pool.wait(5)
        factory.fail = -1  # a second outage: reported again
        pool.drain()  # closes the idle connection; min_size needs a new one, which fails
        wait_until(sched, lambda: len(calls) == 2)
        assert calls == [pool, pool]


def test_reconnect_failed_errors_are_logged_not_raised(sched, caplog):
    factory = Factory(fail=-1)

    def broken(pool):
        raise RuntimeError("alerting is down")

    with make_pool(sched, factory, min_size=1, reconnect_failed=broken, reconnect_timeout=0) as pool:
        messages = lambda: [r.getMessage() for r in caplog.records]  # noqa: E731
        wait_until(sched, lambda: any("reconnect_failed callback raised" in m for m in messages()))
        errors = pool.stats().connect_errors
        wait_until(sched, lambda: pool.stats().connect_errors > errors)  # the worker survived


def test_discard_wakes_waiter_with_a_new_connection(sched, factory):
    with make_pool(sched, factory, max_size=1) as pool:
        held = pool.acquire()
        results: list = []
        task = spawn_acquirer(sched, pool, results, "w")
        wait_until(sched, lambda: pool.stats().waiting == 1)
        pool.release(held, discard=True)
        assert task.join(5)
        [(_, got)] = results
        assert isinstance(got, FakeConn) and got is not held
        wait_until(sched, lambda: held.closed)  # closing is background work
        assert pool.stats().discarded == 1
        assert_consistent(sched, pool, factory)


# ------------------------------------------- cancellation and timeouts


def test_timed_out_waiter_loses_nothing(sched, factory):
    with make_pool(sched, factory, max_size=1) as pool:
        held = pool.acquire()
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0.05)
        stats = pool.stats()
        assert (stats.waiting, stats.timeouts, stats.size) == (0, 1, 1)
        pool.release(held)
        assert pool.stats().idle == 1
        with pool.connection(timeout=0) as conn:
            assert conn is held


@pytest.mark.parametrize("first_timeout", [None, 5.0, 0.2])
def test_waiters_time_out_on_their_own_deadlines(sched, factory, first_timeout):
    """Waiters queued with a later, no, or the same kind of deadline do not delay one another's timeout.

    On green runtimes the housekeeper expires deadlines that arrive in order
    and a waiter whose deadline is earlier than the one queued before it gets
    a timer of its own: both ways must time out on time.
    """
    with make_pool(sched, factory, max_size=1) as pool:
        held = pool.acquire()
        results: list = []
        first = spawn_acquirer(sched, pool, results, "first", timeout=first_timeout)
        wait_until(sched, lambda: pool.stats().waiting == 1)
        second = spawn_acquirer(sched, pool, results, "second", timeout=0.1)
        wait_until(sched, lambda: any(tag == "second" for tag, _ in results), timeout=2.0)
        assert isinstance(dict(results)["second"], PoolTimeout)
        if first_timeout == 0.2:
            assert second.join(5)
            wait_until(sched, lambda: len(results) == 2, timeout=2.0)
            assert isinstance(dict(results)["first"], PoolTimeout)
        pool.release(held)
        assert first.join(5) and second.join(5)
        outcome = dict(results)
        if first_timeout != 0.2:
            assert outcome["first"] is held  # still waiting after the other one timed out: served
        stats = pool.stats()
        assert (stats.waiting, stats.in_use, stats.size) == (0, 0, 1)
        assert stats.timeouts == (2 if first_timeout == 0.2 else 1)


def test_interrupted_while_hand_off_in_flight(sched, factory):
    """The waiter is interrupted just as the connection is handed to it: it goes to the next waiter."""
    armed = ArmedScheduler(sched)
    with Pool(factory, backend=armed, max_size=1, timeout=5) as pool:
        held = pool.acquire()
        results: list = []
        armed.armed = True
        doomed = spawn_acquirer(sched, pool, results, "doomed")
        wait_until(sched, lambda: pool.stats().waiting == 1)
        armed.armed = False
        patient = spawn_acquirer(sched, pool, results, "patient")
        wait_until(sched, lambda: pool.stats().waiting == 2)
        pool.release(held)  # handed to "doomed", whose wait then raises Interrupt
        assert doomed.join(5) and patient.join(5)
        outcome = dict(results)
        assert isinstance(outcome["doomed"], Interrupt)  # re-raised, not swallowed
        assert outcome["patient"] is held  # passed on, not lost
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use, stats.waiting) == (1, 1, 0, 0)
        assert_consistent(sched, pool, factory)


def test_interrupted_waiter_without_hand_off(sched, factory):
    armed = ArmedScheduler(sched)
    with Pool(factory, backend=armed, max_size=1, timeout=0.05) as pool:
        held = pool.acquire(timeout=5)  # the first connect: not bound by the short default
        armed.armed = True
        with pytest.raises(Interrupt):
            pool.acquire()
        armed.armed = False
        assert pool.stats().waiting == 0
        pool.release(held)
        assert pool.stats().idle == 1


def test_base_exception_inside_connection_discards(sched, factory):
    with make_pool(sched, factory, max_size=1) as pool:
        with pytest.raises(Interrupt), pool.connection() as conn:
            raise Interrupt
        assert conn.closed or not pool.stats().idle
        wait_until(sched, lambda: conn.closed)
        assert pool.stats().discarded == 1
        with pool.connection() as other:
            assert other is not conn


def test_discard_on_and_other_exceptions(sched, factory):
    with make_pool(sched, factory, max_size=1, discard_on=(KeyError,)) as pool:
        with pytest.raises(ValueError), pool.connection() as first:
            raise ValueError("application error: connection is fine")
        with pytest.raises(KeyError), pool.connection() as second:
            assert second is first
            raise KeyError("protocol error")
        wait_until(sched, lambda: first.closed)
        with pool.connection() as third:
            assert third is not first


def test_oserror_discards_by_default(sched, factory):
    with make_pool(sched, factory) as pool:
        with pytest.raises(ConnectionResetError), pool.connection() as conn:
            raise ConnectionResetError
        wait_until(sched, lambda: conn.closed)


def test_green_timeout_inside_connection_discards(sched, factory):
    if sched.name == "threading":
        pytest.skip("threads have no asynchronous timeout exception")
    if sched.name == "gevent":
        import gevent

        timeout_cls = gevent.Timeout
    else:
        import eventlet

        timeout_cls = eventlet.Timeout
    with make_pool(sched, factory) as pool:
        with pytest.raises(timeout_cls):
            with pool.connection() as conn, timeout_cls(0.01):  # armed once the connection is held
                sched.sleep(1)
        wait_until(sched, lambda: conn.closed)
        assert pool.stats().in_use == 0


def test_green_timeout_while_waiting(sched, factory):
    if sched.name == "threading":
        pytest.skip("threads have no asynchronous timeout exception")
    if sched.name == "gevent":
        import gevent

        timeout_cls = gevent.Timeout
    else:
        import eventlet

        timeout_cls = eventlet.Timeout
    with make_pool(sched, factory, max_size=1) as pool:
        held = pool.acquire()
        with pytest.raises(timeout_cls), timeout_cls(0.02):
            pool.acquire(timeout=5)
        assert pool.stats().waiting == 0
        pool.release(held)
        assert pool.stats().idle == 1


# ------------------------------------------------------------- release


def test_release_never_blocks_and_reset_runs_before_reuse(sched, factory):
    gate = sched.event()
    started = sched.event()

    def reset(conn):
        started.set()
        gate.wait(5)
        conn.resets += 1

    with make_pool(sched, factory, max_size=1, reset=reset) as pool:
        conn = pool.acquire()
        pool.release(conn)  # returns at once although reset blocks
        assert started.wait(5)
        assert pool.stats().in_use == 1  # not reusable until reset finished
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0)
        gate.set()
        again = pool.acquire(timeout=5)
        assert again is conn and conn.resets == 1
        pool.release(again)


def test_failing_reset_discards(sched, factory):
    def reset(conn):
        raise RuntimeError("rollback failed")

    with make_pool(sched, factory, max_size=1, reset=reset) as pool:
        conn = pool.acquire()
        pool.release(conn)
        wait_until(sched, lambda: conn.closed)
        assert pool.stats().discarded == 1


def test_release_foreign_or_twice_raises(sched, factory):
    with make_pool(sched, factory) as pool:
        conn = pool.acquire()
        with pytest.raises(ValueError, match="not checked out from this pool"):
            pool.release(FakeConn())
        pool.release(conn)
        with pytest.raises(ValueError, match="not checked out from this pool"):
            pool.release(conn)


def test_release_twice_with_reset_hook_raises(sched, factory):
    gate = sched.event()
    with make_pool(sched, factory, reset=lambda c: gate.wait(5)) as pool:
        conn = pool.acquire()
        pool.release(conn)
        with pytest.raises(ValueError):
            pool.release(conn)
        gate.set()


# ------------------------------------------------------------ PoolTimeout


def test_pool_timeout_says_cannot_connect_and_chains_cause(sched):
    error = ConnectionRefusedError("refused by test server")
    factory = Factory(fail=-1, error=error)
    with make_pool(sched, factory) as pool:
        with pytest.raises(PoolTimeout, match="cannot connect") as info:
            pool.acquire(timeout=0.2)
        assert info.value.__cause__ is error
        assert isinstance(info.value, TimeoutError)
        assert pool.stats().connect_errors >= 1


def test_pool_timeout_says_busy(sched, factory):
    with make_pool(sched, factory, max_size=1) as pool:
        held = pool.acquire()
        with pytest.raises(PoolTimeout, match="all connections are busy") as info:
            pool.acquire(timeout=0.02)
        assert info.value.__cause__ is None
        assert "in_use=1" in str(info.value)
        pool.release(held)


# ---------------------------------------------------------- size rules


def test_burst_limit(sched, factory):
    with make_pool(sched, factory, max_size=1, burst_limit=2) as pool:
        a = pool.acquire()
        b = pool.acquire(timeout=5)  # under pressure: one more than max_size
        assert pool.stats().size == 2
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0.05)
        pool.release(b)  # above max_size and nobody waits: closed
        wait_until(sched, lambda: b.closed)
        pool.release(a)
        assert pool.stats().size == 1


def test_max_waiting(sched, factory):
    with make_pool(sched, factory, max_size=1, max_waiting=1) as pool:
        held = pool.acquire()
        results: list = []
        task = spawn_acquirer(sched, pool, results, "w")
        wait_until(sched, lambda: pool.stats().waiting == 1)
        with pytest.raises(TooManyWaiters):
            pool.acquire(timeout=5)
        pool.release(held)
        assert task.join(5)
        assert results[0][1] is held


def test_max_uses_and_max_lifetime_retire(sched, factory):
    with make_pool(sched, factory, max_uses=2) as pool:
        with pool.connection() as c1:
            pass
        with pool.connection() as c2:
            assert c2 is c1
        wait_until(sched, lambda: c1.closed)
        with pool.connection() as c3:
            assert c3 is not c1


def test_check_discards_bad_connection_transparently(sched, factory):
    bad: set[int] = set()
    with make_pool(sched, factory, max_size=2, check=lambda c: c.id not in bad, check_after=0) as pool:
        with pool.connection() as first:
            pass
        bad.add(first.id)
        with pool.connection() as conn:
            assert conn is not first
        wait_until(sched, lambda: first.closed)


def test_check_skipped_for_recently_used(sched, factory):
    calls: list = []
    with make_pool(sched, factory, check=lambda c: calls.append(c) or True, check_after=60) as pool:
        with pool.connection():
            pass
        with pool.connection():
            pass
        assert calls == []


def test_resize_and_drain(sched, factory):
    with make_pool(sched, factory, min_size=1, max_size=3) as pool:
        pool.wait(5)
        pool.resize(min_size=3)
        pool.wait(5)
        assert pool.stats().size == 3
        held = pool.acquire()
        pool.drain()
        wait_until(sched, lambda: sum(not c.closed for c in factory.made) == 3 and pool.stats().idle == 2)
        pool.release(held)  # predates the drain: retired
        wait_until(sched, lambda: held.closed)
        pool.resize(min_size=0, max_size=1)
        wait_until(sched, lambda: pool.stats().size <= 1)
        with pytest.raises(ValueError, match="min_size"):
            pool.resize(min_size=5)
        assert_consistent(sched, pool, factory)


def test_connector_object_hooks(sched):
    class Connector:
        def __init__(self):
            self.closed: list = []
            self.stale: set = set()

        def connect(self):
            return FakeConn()

        def close(self, conn):
            self.closed.append(conn)

        def check(self, conn):
            return conn not in self.stale

    connector = Connector()
    with Pool(connector, backend=sched, check_after=0) as pool:
        with pool.connection() as first:
            pass
        connector.stale.add(first)
        with pool.connection() as second:
            assert second is not first
        wait_until(sched, lambda: first in connector.closed)


# ----------------------------------------------------------------- close


def test_close_wakes_waiters_and_refuses_new_acquires(sched, factory):
    pool = make_pool(sched, factory, max_size=1)
    pool.open()
    held = pool.acquire()
    results: list = []
    task = spawn_acquirer(sched, pool, results, "w")
    wait_until(sched, lambda: pool.stats().waiting == 1)
    closer = sched.spawn(pool.close, 5.0)
    assert task.join(5)
    assert isinstance(results[0][1], PoolClosed)
    with pytest.raises(PoolClosed):
        pool.acquire()
    pool.release(held)  # closed as it comes back
    assert closer.join(5)
    assert held.closed
    assert pool.closed
    pool.close()  # idempotent
    with pytest.raises(PoolClosed):
        pool.open()


def test_close_closes_checked_out_after_timeout(sched, factory):
    pool = make_pool(sched, factory)
    pool.open()
    held = pool.acquire()
    pool.close(timeout=0.05)
    assert held.closed
    pool.release(held)  # late release is accepted quietly
    assert factory.open_conns() == []


def test_stats_invariant_and_json(sched, factory):
    import json

    with make_pool(sched, factory, max_size=3, name="db") as pool:
        conns = [pool.acquire() for _ in range(2)]
        stats = pool.stats()
        assert stats.size == stats.idle + stats.in_use == 2
        data = json.loads(json.dumps(stats.as_dict()))
        assert data["name"] == "db" and data["backend"] == sched.name
        assert set(data) >= {
            "min_size", "max_size", "size", "idle", "in_use", "waiting", "connecting", "acquired",
            "timeouts", "connects", "connect_errors", "closed", "discarded", "leaks",
            "wait_p50", "wait_p99", "wait_max", "use_p50", "use_p99", "connect_p50",
        }  # fmt: skip
        for conn in conns:
            pool.release(conn)
    assert pool.name == "db" and pool.backend == sched.name and pool.closed


def test_pool_opens_on_first_acquire(sched, factory):
    pool = make_pool(sched, factory)
    conn = pool.acquire()
    pool.release(conn)
    pool.close()
    assert conn.closed


def test_many_workers_nothing_lost(sched, factory):
    """A stress of waiters with short timeouts, discards and returns: the books balance."""
    import random

    rng = random.Random(7)
    with make_pool(sched, factory, max_size=3, burst_limit=4) as pool:

        def worker(seed):
            r = random.Random(seed)
            for _ in range(30):
                try:
                    conn = pool.acquire(timeout=r.choice([0, 0.001, 0.05]))
                except PoolTimeout:
                    continue
                sched.sleep(r.choice([0, 0, 0.001]))
                pool.release(conn, discard=r.random() < 0.2)

        tasks = [sched.spawn(worker, rng.random()) for _ in range(12)]
        for task in tasks:
            assert task.join(30)
        wait_until(sched, lambda: pool.stats().connecting == 0)
        stats = pool.stats()
        assert stats.waiting == 0 and stats.in_use == 0
        assert_consistent(sched, pool, factory)
    assert factory.open_conns() == []
