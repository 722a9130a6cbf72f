"""The drivers' inlined fast paths do exactly what the core's general paths do.

``Pool.acquire`` (sync runtimes) takes an idle connection without calling
``Core.checkout`` when the pool has no time rule on idle records, and
``BasePool.release`` (every runtime) hands a returning connection to a
waiter or to idle without calling ``Core.checkin``.  Each saves a Python
frame per cycle, and each restates a piece of the core's bookkeeping.

This machine keeps two cores with the same settings in lock step: one driven
the plain way (``Core.checkout`` / ``Core.checkin``, as the core's own tests
drive it), the other through a real ``Pool``'s ``acquire`` and ``release``.
After every step it compares everything the two cores hold: every attribute
of the core, of every record and of every waiting ticket.  A field the core
starts to keep, or a rule it starts to apply, that a fast path does not
follow makes the two diverge here.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from connpool import Pool, PoolClosed, PoolTimeout, TooManyWaiters
from connpool._core import SERVED, Core, Record, Samples, Ticket

from .helpers import FakeConn


class Waker:
    """What a waiting caller blocks on; ``set()`` is logged as the caller's wake-up."""

    def __init__(self, n: int, log: list[int]) -> None:
        self.n = n
        self._log = log

    def set(self) -> None:
        self._log.append(self.n)


# Record fields the plain path and the fast path may leave different on purpose:
# ``holder`` (the driver records who acquired, for leak reports; the core alone
# cannot), and ``pinged``, which only the keepalive reads (a pool with a
# keepalive returns through Core.place, which sets it).
_FREE_FIELDS = {"holder", "pinged"}


def _snapshot(value: Any, keepalive: bool) -> Any:
    """``value`` with its identity-bearing parts made comparable across the two cores."""
    if isinstance(value, Record):
        skip = _FREE_FIELDS - ({"pinged"} if keepalive else set())
        return (
            "Record",
            {f: _snapshot(getattr(value, f), keepalive) for f in Record.__slots__ if f not in skip},
        )
    if isinstance(value, Ticket):
        fields = [f for f in Ticket.__slots__ if f != "waker"]
        return ("Ticket", value.waker.n, {f: _snapshot(getattr(value, f), keepalive) for f in fields})
    if isinstance(value, Samples):
        return ("Samples", _snapshot(vars(value) if hasattr(value, "__dict__") else _slots(value), keepalive))
    if isinstance(value, (list, tuple, deque)):
        return [_snapshot(v, keepalive) for v in value]
    if isinstance(value, dict):
        # busy and force_closed are keyed by id(conn): the same conn in both cores
        return {k: _snapshot(v, keepalive) for k, v in value.items()}
    if isinstance(value, BaseException):
        return (type(value).__name__, str(value))
    return value


def _slots(obj: Any) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in type(obj).__slots__}


def _core_state(core: Core) -> dict[str, Any]:
    keepalive = core.keepalive_interval is not None
    return {
        name: _snapshot(value, keepalive)
        for name, value in vars(core).items()
        # take_idle and _rng are bound to each core's own objects; _config is the settings
        if not callable(value) and name != "_config"
    }


class TwinCores(RuleBasedStateMachine):
    @initialize(
        min_size=st.integers(0, 2),
        max_size=st.integers(1, 3),
        burst=st.integers(0, 2) | st.none(),
        max_waiting=st.integers(0, 3),
        lifo=st.booleans(),
        max_uses=st.integers(1, 3) | st.none(),
        max_lifetime=st.sampled_from([None, 5.0]),
        max_idle=st.sampled_from([None, 2.0]),
        leak_timeout=st.sampled_from([None, 3.0]),
    )
    def setup(
        self, min_size, max_size, burst, max_waiting, lifo, max_uses, max_lifetime, max_idle, leak_timeout
    ):
        max_size = max(min_size, max_size)
        settings_ = {
            "min_size": min_size,
            "max_size": max_size,
            "burst_limit": None if burst is None else max_size + burst,
            "max_waiting": max_waiting,
            "lifo": lifo,
            "max_uses": max_uses,
            "max_lifetime": max_lifetime,
            "max_idle": max_idle,
            "leak_timeout": leak_timeout,
        }
        self.now = 1000.0
        self.plain = Core(**settings_, rng=lambda: 0.5)
        # The pool is never opened: its core and clock are the machine's, its lock a real one,
        # and the work a change would start in the background is the machine's drive().
        pool: Pool[FakeConn] = Pool(FakeConn, backend="threading", **settings_)
        fast = pool._core = Core(**settings_, rng=lambda: 0.5)
        pool._opened = True
        pool._now = lambda: self.now
        pool._lock = threading.Lock()
        pool._after_change = lambda: None  # type: ignore[method-assign]
        self.pool = pool
        self.fast = fast
        self.cores = (self.plain, fast)
        self.held: list[FakeConn] = []  # checked out by callers, the same in both cores
        self.resetting: list[FakeConn] = []  # released to a pool with a reset hook, hook running
        self.tickets: tuple[list[Ticket], list[Ticket]] = ([], [])
        self.woken: tuple[list[int], list[int]] = ([], [])  # ticket numbers, in wake-up order
        self.seen_served: set[int] = set()
        self.pings: list[FakeConn] = []
        self.pending = 0
        self.numbers = itertools.count()
        self.drive()

    # ------------------------------------------------------------ the driver

    def drive(self) -> None:
        """What a driver does after a change, on both cores; then compare them."""
        plain, fast = self.cores
        assert [r.conn for r in plain.to_close] == [r.conn for r in fast.to_close]
        plain.to_close = []
        fast.to_close = []
        n = plain.plan_connects()
        assert fast.plan_connects() == n
        self.pending += n
        # callers a release or a connect served now hold their connection
        plain_tickets, fast_tickets = self.tickets
        for a, b in zip(plain_tickets, fast_tickets, strict=True):
            assert a.state == b.state
            if a.state == SERVED and a.waker.n not in self.seen_served:
                assert a.record is not None and b.record is not None
                assert a.record.conn is b.record.conn
                self.seen_served.add(a.waker.n)
                self.held.append(a.record.conn)
        assert _core_state(plain) == _core_state(fast)

    def both(self, plain_call: Any, fast_call: Any) -> Any:
        """Run one step on each core; both raise the same error or return alike."""
        outcomes = []
        for call in (plain_call, fast_call):
            try:
                outcomes.append(("returned", call()))
            except (ValueError, PoolClosed, PoolTimeout, TooManyWaiters) as exc:
                outcomes.append(("raised", type(exc)))
        assert outcomes[0][0] == outcomes[1][0], outcomes
        if outcomes[0][0] == "raised":
            assert outcomes[0][1] is outcomes[1][1], outcomes
            return None
        return outcomes[0][1], outcomes[1][1]

    # ----------------------------------------------------------------- rules

    @rule(dt=st.sampled_from([0.5, 2.5, 6.0]))
    def tick(self, dt):
        self.now += dt

    @precondition(lambda self: self.pending)
    @rule()
    def connect_done(self):
        self.pending -= 1
        conn = FakeConn()
        woke = [core.connect_done(conn, self.now) for core in self.cores]
        assert (woke[0] is None) == (woke[1] is None)
        self.drive()

    @rule()
    def acquire(self):
        """``Pool.acquire(timeout=0)`` against what it did before its fast path was inlined."""

        def plain() -> FakeConn:
            rec = self.plain.checkout(self.now)
            if rec is None:
                self.plain.timeouts += 1
                raise PoolTimeout("no connection")
            return rec.conn  # type: ignore[no-any-return]

        got = self.both(plain, lambda: self.pool.acquire(timeout=0))
        if got is not None:
            assert got[0] is got[1]
            self.held.append(got[0])
        self.drive()

    @precondition(lambda self: not self.plain.idle)
    @rule(timeout=st.sampled_from([math.inf, 1.0]), managed=st.booleans())
    def wait(self, timeout, managed):
        """A caller finds no idle connection and queues (both cores get the same ticket)."""
        n = next(self.numbers)
        got = self.both(
            lambda: self.plain.enqueue(self.now, Waker(n, self.woken[0]), self.now + timeout, managed),
            lambda: self.fast.enqueue(self.now, Waker(n, self.woken[1]), self.now + timeout, managed),
        )
        if got is not None:
            self.tickets[0].append(got[0])
            self.tickets[1].append(got[1])
        self.drive()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), discard=st.booleans())
    def release(self, data, discard):
        conn = data.draw(st.sampled_from(self.held))
        self.held.remove(conn)

        def plain() -> None:
            ticket = self.plain.checkin(conn, self.now, discard)
            if ticket is not None:
                ticket.waker.set()

        self.both(plain, lambda: self.pool.release(conn, discard))
        assert self.woken[0] == self.woken[1]
        self.drive()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release_with_reset(self, data):
        """A pool with a reset hook: the connection is marked as coming back until the hook ran."""
        conn = data.draw(st.sampled_from(self.held))
        self.held.remove(conn)
        got = self.both(lambda: self.plain.begin_return(conn), lambda: self.fast.begin_return(conn))
        if got is not None and got[0] is not None:
            self.resetting.append(conn)
        self.drive()

    @precondition(lambda self: self.resetting)
    @rule(ok=st.booleans())
    def reset_done(self, ok):
        conn = self.resetting.pop(0)
        for core in self.cores:
            rec = core.busy.get(id(conn))
            if rec is not None:  # (else close() retired it by force meanwhile)
                ticket = core.checkin_record(rec, self.now, discard=not ok)
                if ticket is not None:
                    ticket.waker.set()
        assert self.woken[0] == self.woken[1]
        self.drive()

    @rule(data=st.data())
    def release_refused(self, data):
        """A foreign object, or one not checked out (idle, being reset): refused by both."""
        idle = [rec.conn for rec in self.plain.idle]
        conn = data.draw(st.sampled_from([FakeConn(), *idle, *self.resetting]))
        got = self.both(lambda: self.plain.checkin(conn, self.now), lambda: self.pool.release(conn))
        assert got is None, "an object not checked out was taken back"
        self.drive()

    @rule()
    def housekeep(self):
        plain_out, fast_out = (core.housekeep(self.now) for core in self.cores)
        for (plain_list, fast_list), kind in zip(zip(plain_out, fast_out, strict=True), "PLE", strict=True):
            assert len(plain_list) == len(fast_list)
            if kind == "E":  # expired waiters raise PoolTimeout
                for a, b in zip(plain_list, fast_list, strict=True):
                    self.plain.timed_out(a, self.now)
                    self.fast.timed_out(b, self.now)
            elif kind == "P":  # keepalive: not configured here
                assert not plain_list, "a ping without keepalive_interval"
        self.drive()

    @rule(op=st.sampled_from(["drain", "close", "force_close"]))
    def shut(self, op):
        for core in self.cores:
            getattr(core, op)()
        if op == "force_close":
            self.held.clear()
            self.resetting.clear()
        if op == "close":
            for tickets in self.tickets:
                tickets.clear()
            self.tickets = ([], [])
        self.drive()

    @rule(max_size=st.integers(1, 3))
    def resize(self, max_size):
        self.both(lambda: self.plain.resize(None, max_size), lambda: self.fast.resize(None, max_size))
        self.drive()


TestTwinCores = TwinCores.TestCase
# (no "explain" phase: its tracing makes a failure's report take minutes under gevent)
TestTwinCores.settings = settings(
    max_examples=400,
    stateful_step_count=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


# Every way a return leaves the fast path, played step by step (the random machine above
# finds them too, but some need a long sequence of the right steps).
_SCENARIOS: dict[str, tuple[dict[str, Any], list[tuple[str, Any]]]] = {
    "plain": ({}, [("acquire", None), ("tick", 2.5), ("release", False), ("acquire", None)]),
    "discard": ({}, [("acquire", None), ("release", True), ("connect_done", None), ("acquire", None)]),
    "max_uses": ({"max_uses": 1}, [("acquire", None), ("release", False), ("connect_done", None)]),
    "lifetime": ({"max_lifetime": 5.0}, [("acquire", None), ("tick", 6.0), ("release", False)]),
    "lifetime_idle": (
        {"max_lifetime": 5.0},
        [("acquire", None), ("release", False), ("tick", 6.0), ("acquire", None)],
    ),
    "drained": ({}, [("acquire", None), ("shut", "drain"), ("release", False)]),
    "closed": ({}, [("acquire", None), ("shut", "close"), ("release", False), ("acquire", None)]),
    "forced": ({}, [("acquire", None), ("shut", "force_close"), ("release_forced", None)]),
    "leaked": (
        {"leak_timeout": 3.0},
        [("acquire", None), ("tick", 6.0), ("housekeep", None), ("release", False)],
    ),
    "waiter": ({}, [("acquire", None), ("wait", (math.inf, False)), ("release", False)]),
    "managed_waiter": ({}, [("acquire", None), ("wait", (1.0, True)), ("release", False)]),
    "idle_timer": (
        {"max_idle": 2.0},
        [("acquire", None), ("tick", 2.5), ("housekeep", None), ("release", False)],
    ),
    "burst": (
        {"burst": 1},
        [("acquire", None), ("wait", (math.inf, False)), ("connect_done", None), ("release", False)],
    ),
    "resized": (
        {"min_size": 2, "max_size": 2},
        [("acquire", None), ("acquire", None), ("resize", 1), ("release", False)],
    ),
    "resetting": (
        {},
        [("acquire", None), ("release_with_reset", None), ("refuse_resetting", None), ("reset_done", True)],
    ),
    # a refused release must leave the pool as it was, down to the order close() retires in
    "refused_then_forced": (
        {"min_size": 2, "max_size": 2},
        [
            ("acquire", None),
            ("acquire", None),
            ("release_with_reset", None),
            ("refuse_resetting", None),
            ("shut", "force_close"),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(_SCENARIOS))
def test_each_way_off_the_fast_path_matches_the_core(name: str) -> None:
    """The fast paths step aside, or do the same as the core, in every case the core treats apart."""
    config, steps = _SCENARIOS[name]
    machine = _machine(**config)
    for step, arg in steps:
        if step in ("release", "release_with_reset"):
            rule_args: dict[str, Any] = {"data": _Pick(machine.held[0])}
            if step == "release":
                rule_args["discard"] = arg
            getattr(machine, step)(**rule_args)
        elif step == "release_forced":  # close() retired it by force: accepted once, to nothing
            accepted = machine.both(
                lambda: machine.plain.checkin(forced, machine.now), lambda: machine.pool.release(forced)
            )
            assert accepted == (None, None)
            machine.drive()
        elif step == "refuse_resetting":
            machine.release_refused(_Pick(machine.resetting[0]))
        elif step == "wait":
            machine.wait(*arg)
        elif step in ("tick", "resize"):
            getattr(machine, step)(arg)
        elif step == "shut":
            forced = machine.held[0] if machine.held else None
            machine.shut(arg)
        elif step == "reset_done":
            machine.reset_done(arg)
        else:
            getattr(machine, step)()


def test_the_acquire_fast_path_runs_only_without_idle_time_rules() -> None:
    """The inlined checkout is for pools where no idle record can expire and none needs a leak timer."""
    assert Core().plain_checkout
    assert not Core(max_lifetime=5.0).plain_checkout
    assert not Core(leak_timeout=3.0).plain_checkout
    core = Core()
    core.close()
    assert not core.plain_checkout  # a closed pool's checkout raises PoolClosed


def _machine(**overrides: Any) -> TwinCores:
    machine = TwinCores()
    config: dict[str, Any] = {
        "min_size": 1, "max_size": 1, "burst": None, "max_waiting": 0, "lifo": True, "max_uses": None,
        "max_lifetime": None, "max_idle": None, "leak_timeout": None,
    }  # fmt: skip
    machine.setup(**(config | overrides))
    while machine.pending:  # min_size
        machine.connect_done()
    return machine


class _Pick:
    """Stands in for hypothesis' ``data`` when a test plays the machine's rules by hand."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def draw(self, strategy: Any) -> Any:
        return self.value


def test_the_twins_catch_an_acquire_fast_path_that_skips_a_time_rule() -> None:
    """The comparison has teeth: a fast checkout left on with max_lifetime hands out an expired connection."""
    machine = _machine(max_lifetime=5.0)
    machine.acquire()
    machine.release(_Pick(machine.held[0]), discard=False)
    machine.tick(6.0)
    machine.fast.plain_checkout = True  # the bug: a flag that should be off
    with pytest.raises(AssertionError):
        machine.acquire()


def test_the_twins_catch_a_release_fast_path_that_misses_new_bookkeeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The comparison has teeth: a counter the core starts to keep on return, which the fast path lacks."""
    checkin_record = Core.checkin_record

    def counting(self: Core, rec: Record, now: float, discard: bool = False) -> Ticket | None:
        self.returns = getattr(self, "returns", 0) + 1  # type: ignore[attr-defined]
        return checkin_record(self, rec, now, discard)

    monkeypatch.setattr(Core, "checkin_record", counting)
    machine = _machine()
    machine.acquire()
    with pytest.raises(AssertionError):
        machine.release(_Pick(machine.held[0]), discard=False)
