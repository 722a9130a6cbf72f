"""Single core rules pinned down by hand, beside the state machine's invariants."""

from __future__ import annotations

import pytest

from connpool._core import Core


def test_new_waiter_during_backoff_starts_one_more_attempt_within_max_connecting():
    core = Core(max_size=4, max_connecting=2, rng=lambda: 1.0)
    core.enqueue(0.0, None)
    assert core.plan_connects() == 1
    delay = core.connect_failed(OSError("refused"))
    assert delay == core.backoff_initial  # the failed attempt keeps its slot and backs off
    assert core.connecting == 1
    core.enqueue(0.0, None)  # a second caller: not covered by the attempt backing off
    assert core.plan_connects() == 1
    core.enqueue(0.0, None)  # a third: max_connecting (2) is reached, nothing more starts
    assert core.plan_connects() == 0
    assert core.connect_failed(OSError("refused")) == core.backoff_initial * 2  # failures add up


def _fill(core: Core, n: int) -> list[object]:
    """Open ``n`` connections and check them all out; returns them."""
    conns: list[object] = []
    for _ in range(n):
        core.min_size = len(conns) + 1
        assert core.plan_connects() == 1
        core.connect_done(object(), 0.0)
        rec = core.checkout(0.0)
        assert rec is not None
        conns.append(rec.conn)
    core.min_size = 0
    return conns


def test_resize_down_while_all_are_out_closes_the_excess_as_they_return():
    core = Core(max_size=4)
    conns = _fill(core, 4)
    core.resize(max_size=2)
    for conn in conns:
        assert core.checkin(conn, 1.0) is None
    assert core.size == 2  # two returned to idle, the two above max_size were closed
    assert len(core.to_close) == 2


def test_burst_connections_close_when_they_return_with_nobody_waiting():
    core = Core(max_size=2, burst_limit=3)
    conns = _fill(core, 2)
    core.enqueue(0.0, None)
    assert core.plan_connects() == 1  # a burst connection for the waiter
    ticket = core.connect_done(object(), 0.0)
    assert ticket is not None and ticket.record is not None
    for conn in [*conns, ticket.record.conn]:
        core.checkin(conn, 1.0)
    assert core.size == 2
    assert len(core.to_close) == 1


def test_wait_percentiles_count_immediate_checkouts_as_zero_waits():
    core = Core(max_size=1)
    conns = _fill(core, 1)  # one immediate checkout (no sample stored)
    for _ in range(2):  # two more immediate ones
        core.checkin(conns[0], 0.0)
        rec = core.checkout(0.0)
        assert rec is not None
    ticket = core.enqueue(1.0, None)  # one caller waits 2 s for the hand-over
    assert core.checkin(conns[0], 3.0) is ticket
    stats = core.stats()
    assert stats["acquired"] == 4
    assert stats["wait_p50"] == 0.0  # three of the four waits were 0
    assert stats["wait_p99"] == stats["wait_max"] == 2000.0


def test_use_percentiles_cover_the_last_1024_returns_by_every_path():
    core = Core(max_size=1)
    conn = _fill(core, 1)[0]
    core.checkin(conn, 5.0)  # a plain return: used 5 s
    assert core.stats()["use_p50"] == 5000.0
    for _ in range(1100):  # then 1100 uses of 1 s each push it out of the window
        rec = core.checkout(10.0)
        assert rec is not None
        core.checkin(conn, 11.0)
    stats = core.stats()
    assert stats["use_p50"] == stats["use_p99"] == 1000.0
    rec = core.checkout(20.0)
    assert rec is not None
    core.begin_return(conn)  # a return through the reset hook counts too
    core.checkin_record(rec, 1000.0)
    assert core.stats()["use_p99"] == 1000.0 and max(core.use_times) == 980.0
    assert len(core.use_times) == 1024


def test_a_record_waiting_for_its_replacement_is_never_handed_out():
    core = Core(min_size=1, max_size=2, max_lifetime=5.0, rng=lambda: 0.0)
    old = _fill(core, 1)[0]
    core.min_size = 1  # (_fill leaves it at 0)
    core.checkin(old, 1.0)
    core.housekeep(6.0)  # its lifetime is over: min_size keeps it until the replacement is open
    assert core.replacing == 1 and core.plan_connects() == 1
    assert core.checkout(6.0) is None  # not handed out: retired on the way
    assert [rec.conn for rec in core.to_close] == [old] and core.replacing == 0
    core.connect_done(object(), 6.0)
    rec = core.checkout(6.0)
    assert rec is not None and rec.conn is not old and not rec.replacing


def test_a_connection_force_close_retired_comes_back_once_to_nothing():
    core = Core(max_size=2)
    held, reset = _fill(core, 2)
    core.close()
    core.force_close()
    closed = list(core.to_close)
    assert core.checkin(held, 1.0) is None  # accepted: its holder may not know the pool closed
    with pytest.raises(ValueError, match="not checked out"):
        core.checkin(held, 1.0)  # but only once
    assert core.begin_return(reset) is None  # by the reset path too
    with pytest.raises(ValueError, match="not checked out"):
        core.begin_return(reset)
    with pytest.raises(ValueError, match="not checked out"):
        core.checkin(object(), 1.0)  # a foreign object is still refused
    assert core.to_close == closed  # nothing was closed twice
    assert not core.idle and not core.busy and not core.force_closed
