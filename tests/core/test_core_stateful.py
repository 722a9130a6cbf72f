"""Hypothesis drives the pure core through random interleavings and checks its invariants.

The machine plays the driver: after every step it does what a driver does
(closes what the core put in ``to_close``, starts the connects
``plan_connects`` asks for) and then checks that nothing was lost.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from connpool._core import ABANDONED, EXPIRED, FAILED, SERVED, WAITING, Core, Ticket
from connpool._errors import PoolClosed, TooManyWaiters


class Conn:
    _ids = itertools.count()

    def __init__(self) -> None:
        self.id = next(self._ids)

    def __repr__(self) -> str:
        return f"Conn{self.id}"


class CoreMachine(RuleBasedStateMachine):
    @initialize(
        min_size=st.integers(0, 3),
        extra=st.integers(0, 3),
        burst=st.integers(0, 3) | st.none(),
        max_waiting=st.integers(0, 4),
        lifo=st.booleans(),
        max_connecting=st.integers(1, 3),
        max_uses=st.integers(1, 4) | st.none(),
        max_lifetime=st.sampled_from([None, 5.0, 50.0]),
        max_idle=st.sampled_from([None, 1.0, 20.0]),
        keepalive=st.sampled_from([None, 2.0]),
        leak_timeout=st.sampled_from([None, 3.0]),
    )
    def setup(
        self, min_size, extra, burst, max_waiting, lifo, max_connecting, max_uses, max_lifetime,
        max_idle, keepalive, leak_timeout,
    ):  # fmt: skip
        max_size = max(1, min_size + extra)
        self.core = Core(
            min_size=min_size,
            max_size=max_size,
            burst_limit=None if burst is None else max_size + burst,
            max_waiting=max_waiting,
            lifo=lifo,
            max_connecting=max_connecting,
            max_uses=max_uses,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            keepalive_interval=keepalive,
            leak_timeout=leak_timeout,
            rng=lambda: 0.5,
        )
        self.pinging: list = []
        self.now = 0.0
        self.pending = 0  # connect slots the driver is working on
        self.created: set[Conn] = set()
        self.closed_conns: set[Conn] = set()
        self.held: set[Conn] = set()  # handed to callers and not given back
        self.returning: list = []  # records whose reset hook "runs"
        self.tickets: list[Ticket] = []
        self.doomed: set[Conn] = set()  # checked out during a drain or close: never reused
        self.checkouts = 0  # immediate checkouts, plus hand-overs, minus those taken back
        self.served: set[Ticket] = set()
        self.resized = False
        self.drive()

    # ----------------------------------------------------------- the driver

    def drive(self) -> None:
        for rec in self.core.to_close:
            assert rec.conn not in self.closed_conns, "closed twice"
            self.closed_conns.add(rec.conn)
        self.core.to_close = []
        before = self.core.connecting
        n = self.core.plan_connects()
        assert self.core.connecting == before + n
        self.pending += n
        assert self.pending == self.core.connecting
        # waiters woken with PoolClosed leave; served ones wake up later (rule
        # ``waiter_wakes``), so that a cancellation can race the hand-off
        self.tickets = [t for t in self.tickets if t.state not in (FAILED, ABANDONED)]
        for t in self.tickets:
            if t.state == SERVED and t not in self.served:
                self.served.add(t)
                self.checkouts += 1

    # ---------------------------------------------------------------- rules

    @rule(dt=st.sampled_from([0.0, 0.1, 1.0, 10.0]))
    def tick(self, dt):
        self.now += dt

    @rule()
    def housekeep(self):
        """The housekeeper wakes: due deadlines are applied."""
        pings, leaks, expired = self.core.housekeep(self.now)
        for ticket in expired:
            assert ticket.managed and ticket.deadline <= self.now
            assert ticket.state == EXPIRED
            # the waiter wakes and raises PoolTimeout; nothing else to do
            assert self.core.timed_out(ticket, self.now).args
            self.tickets.remove(ticket)
        for rec in pings:
            assert rec.conn not in self.held
            self.pinging.append(rec)
        for rec in leaks:
            assert rec.checked_out + self.core.leak_timeout <= self.now
        assert self.core.wake_at > self.now
        self.drive()

    @precondition(lambda self: self.pinging)
    @rule(ok=st.booleans())
    def ping_done(self, ok):
        rec = self.pinging.pop(0)
        self.core.ping_done(rec, ok, self.now)
        self.drive()
        assert rec.conn not in self.doomed or rec.conn in self.closed_conns

    @rule(timeout=st.sampled_from([None, 0.5, 5.0, 30.0]), managed=st.booleans())
    def acquire(self, timeout, managed):
        try:
            rec = self.core.checkout(self.now)
        except PoolClosed:
            assert self.core.closed
            return
        if rec is not None:
            assert rec.conn not in self.held and rec.conn not in self.doomed
            assert rec.expires > self.now
            self.held.add(rec.conn)
            self.checkouts += 1
        else:
            try:
                deadline = math.inf if timeout is None else self.now + timeout
                self.tickets.append(self.core.enqueue(self.now, None, deadline, managed))
            except TooManyWaiters:
                assert self.core.max_waiting and self.core.waiting >= self.core.max_waiting
        self.drive()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), discard=st.booleans())
    def release(self, data, discard):
        conn = data.draw(st.sampled_from(sorted(self.held, key=lambda c: c.id)))
        self.held.remove(conn)
        self.core.checkin(conn, self.now, discard)
        self.drive()
        assert conn not in self.doomed or conn in self.closed_conns

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release_with_reset(self, data):
        conn = data.draw(st.sampled_from(sorted(self.held, key=lambda c: c.id)))
        self.held.remove(conn)
        self.returning.append(self.core.begin_return(conn))
        self.drive()

    @precondition(lambda self: self.returning)
    @rule(ok=st.booleans())
    def reset_done(self, ok):
        rec = self.returning.pop(0)
        self.core.checkin_record(rec, self.now, discard=not ok)
        self.drive()
        assert rec.conn not in self.doomed or rec.conn in self.closed_conns

    @precondition(lambda self: self.held and not self.core.waiting)
    @rule(data=st.data())
    def release_twice_is_refused(self, data):
        # (with callers waiting, the first release hands the object to one of them,
        # and the second is then that caller's legitimate release)
        conn = data.draw(st.sampled_from(sorted(self.held, key=lambda c: c.id)))
        self.held.remove(conn)
        self.core.checkin(conn, self.now)
        try:
            self.core.checkin(conn, self.now)
        except ValueError:
            pass
        else:
            raise AssertionError("a connection released twice was accepted twice")
        self.drive()

    @rule()
    def release_foreign_is_refused(self):
        try:
            self.core.checkin(Conn(), self.now)
        except ValueError:
            return
        raise AssertionError("foreign object accepted")

    @precondition(lambda self: self.pending)
    @rule()
    def connect_succeeds(self):
        conn = Conn()
        self.created.add(conn)
        self.pending -= 1
        self.core.connect_done(conn, self.now)
        self.drive()

    @precondition(lambda self: self.pending)
    @rule()
    def connect_fails(self):
        delay = self.core.connect_failed(OSError("refused"))
        if delay is None:
            self.pending -= 1
        else:
            assert 0 < delay <= self.core.backoff_max
        self.drive()

    @precondition(lambda self: self.pending)
    @rule()
    def connect_cancelled(self):
        self.pending -= 1
        self.core.connect_cancelled()
        self.drive()

    @precondition(lambda self: any(t.state in (WAITING, SERVED) for t in self.tickets))
    @rule(data=st.data())
    def abandon(self, data):
        """A waiter is cancelled or times out, possibly just as a connection was handed to it."""
        live = [t for t in self.tickets if t.state in (WAITING, SERVED)]
        ticket = data.draw(st.sampled_from(live))
        self.tickets.remove(ticket)
        if ticket.state == SERVED:
            conn = ticket.record.conn
            self.core.abandon(ticket, self.now)
            self.checkouts -= 1  # handed back: as if it never happened
            assert conn not in self.held
        else:
            conn = None
            self.core.timed_out(ticket, self.now)
        assert ticket.state == ABANDONED
        self.drive()
        assert conn not in self.doomed or conn in self.closed_conns

    @precondition(lambda self: any(t.state == SERVED for t in self.tickets))
    @rule(data=st.data())
    def waiter_wakes(self, data):
        ticket = data.draw(st.sampled_from([t for t in self.tickets if t.state == SERVED]))
        self.tickets.remove(ticket)
        assert ticket.record.conn not in self.held
        self.held.add(ticket.record.conn)
        self.drive()

    @rule()
    def drain(self):
        self.doomed |= {rec.conn for rec in self.core.busy.values()}
        self.core.drain()
        self.drive()

    @rule(lo=st.integers(0, 3), extra=st.integers(0, 3))
    def resize(self, lo, extra):
        self.core.resize(lo, max(1, lo + extra))
        self.resized = True
        self.drive()

    @rule()
    def close(self):
        self.doomed |= {rec.conn for rec in self.core.busy.values()}
        self.core.close()
        self.drive()
        assert not self.core.idle and not self.core.waiting

    @precondition(lambda self: self.core.closed)
    @rule()
    def force_close(self):
        self.core.force_close()
        # everything checked out was closed, including what a waiter was about to wake up with
        self.held.clear()
        self.returning.clear()
        self.pinging.clear()
        self.tickets = [t for t in self.tickets if t.state != SERVED]
        self.drive()

    # ----------------------------------------------------------- invariants

    @invariant()
    def sizes_add_up(self):
        core = self.core
        assert core.size == len(core.idle) + len(core.busy)
        assert core.waiting == sum(1 for t in core.waiters if t.state == WAITING)
        assert core.connecting >= 0

    @invariant()
    def within_limits(self):
        core = self.core
        if not self.resized:
            cap = core.burst_limit or core.max_size
            assert core.size + core.connecting <= cap
        assert core.connecting <= core.max_connecting

    @invariant()
    def no_waiter_while_idle(self):
        assert not (self.core.waiting and self.core.idle)

    @invariant()
    def no_stranded_waiter(self):
        core = self.core
        if core.waiting:
            assert core.connecting > 0 or core.size >= core.cap, "waiter left with room and no connect"

    @invariant()
    def min_size_pursued(self):
        core = self.core
        if not core.closed and core.size + core.connecting < core.min_size:
            assert core.connecting == core.max_connecting or core.size + core.connecting >= core.cap

    @invariant()
    def nothing_lost(self):
        core = self.core
        idle = {rec.conn for rec in core.idle}
        busy = {rec.conn for rec in core.busy.values()}
        assert not (idle & busy) and not (idle & self.closed_conns) and not (busy & self.closed_conns)
        assert idle | busy | self.closed_conns == self.created
        served = {t.record.conn for t in self.tickets if t.state == SERVED}
        returning = {rec.conn for rec in self.returning + self.pinging if rec.conn in busy}
        assert busy == self.held | served | returning or core.closed

    @invariant()
    def record_states_and_deadlines(self):
        from connpool._core import BUSY, IDLE

        core = self.core
        assert all(rec.state == IDLE for rec in core.idle)
        assert all(rec.state == BUSY for rec in core.busy.values())
        live = [*core.idle, *core.busy.values()]
        assert core.replacing == sum(rec.replacing for rec in live)
        # at most one pending deadline of each kind per record ever created
        assert len(core.deadlines) <= 4 * len(self.created)
        if not core.closed and core.deadlines:
            assert core.wake_at <= core.deadlines[0][0] or core.wake_early

    @invariant()
    def closed_pool_is_quiet(self):
        core = self.core
        if core.closed:
            assert not core.idle and not core.waiting
            assert core.plan_connects() == 0

    @invariant()
    def timed_waiters_sorted_and_watched(self):
        core = self.core
        deadlines = [t.deadline for t in core.timed]
        assert deadlines == sorted(deadlines)
        live = [t for t in core.timed if t.state == WAITING]
        assert all(t.managed for t in core.timed)
        # every managed waiting ticket is in ``timed``, and the housekeeper looks in time
        managed = [t for t in self.tickets if t.state == WAITING and t.managed]
        assert {id(t) for t in managed} <= {id(t) for t in live}
        if live:
            assert core.wake_at <= min(t.deadline for t in live)
        assert len(core.timed) <= 2 * core.waiting + 33

    @invariant()
    def idle_are_not_expired_when_handed(self):
        for rec in self.core.busy.values():
            assert rec.uses >= 1 or rec in self.pinging
            if rec.conn in self.held:
                assert not rec.replacing  # an expired record waiting for its replacement stays in
            if rec.conn in self.doomed:
                assert rec.expires == -math.inf  # closed when it comes back
            else:
                assert rec.expires == math.inf or rec.expires > rec.created

    @invariant()
    def acquired_counts_checkouts(self):
        assert self.core.acquired == self.core.stats()["acquired"] == self.checkouts

    @invariant()
    def out_during_drain_or_close_is_never_reused(self):
        core = self.core
        assert not any(rec.conn in self.doomed for rec in core.idle)
        for conn in self.doomed - self.closed_conns:  # not back yet: still out, never handed on
            assert conn in self.held or any(conn is rec.conn for rec in core.busy.values())


CoreMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestCore = pytest.mark.timeout(300)(CoreMachine.TestCase)
