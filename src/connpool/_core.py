"""The pool core: every rule of connpool, as a pure state machine.

Design
======

This module decides; it never acts.  It holds no locks, reads no clock,
performs no I/O, imports no runtime and never calls user code.  The drivers
(:mod:`connpool._sync` for threading/gevent/eventlet and
:mod:`connpool._async` for asyncio/trio) call its methods with the current
time, under their lock where the runtime needs one, and carry out what the
answer says: hand a connection to a caller, wake a waiter, open or close
connections in the background.  Because the core is pure, all policy is
tested without a runtime (``tests/core``), including a hypothesis state
machine that checks the invariants below after every step.

Two fast paths live in the drivers instead, because a Python call is a
tenth of a cycle: ``BasePool.release`` hands a returning connection to the
oldest waiter or to idle when no rule applies to it (else it calls
:meth:`Core.checkin`), and the sync driver's ``acquire`` takes an idle
record itself while ``plain_checkout`` says no rule applies at checkout
(else it calls :meth:`Core.checkout`).  They use ``Core.take_idle``,
:meth:`Core.hand_over` and :meth:`Core.place` for the rest, and
``tests/pool/test_fast_paths.py`` runs them in lock step with the core's own
methods and compares every field after every step.

Vocabulary
----------

*record*
    A :class:`Record` wraps one open connection with its bookkeeping
    (creation time, last return, checkout count, lifetime deadline: minus
    infinity once it must be closed when it comes back).
*idle*
    Records ready to be handed out, in a deque (LIFO or FIFO reuse).
*busy*
    Records checked out, keyed by ``id(conn)``, so that ``checkin`` can tell
    a connection of this pool from a foreign or already-returned object.
*ticket*
    A :class:`Ticket` stands for one caller waiting in ``acquire``.  Tickets
    queue in FIFO order.  A ticket is WAITING, then exactly one of SERVED
    (a connection was handed to it), ABANDONED (its caller gave up), EXPIRED
    (its deadline passed, found by :meth:`Core.housekeep`) or FAILED (the pool
    closed).  The driver attaches a *waker* (a scheduler waiter or event) that
    it wakes when a method returns the ticket.
*timed*
    Waiting tickets whose deadline the housekeeper watches instead of a timer
    of their own.  Callers mostly wait with the same timeout, so deadlines
    arrive in order: a ticket joins ``timed`` when its deadline is not earlier
    than the last one there, which keeps ``timed`` sorted, and only its head
    matters.  One wake-up of the housekeeper then serves every such waiter,
    where a timer per wait would cost a heap push and a cancel each time.
*connecting*
    The number of connection attempts in flight.  The core reserves a slot
    when it asks for a connect (:meth:`Core.plan_connects`) and frees it when
    the driver reports the outcome, so concurrent connects are bounded and
    never overshoot the size limits.
*to_close*
    An outbox of records the driver must close (in the background).  Methods
    append to it instead of returning lists, so that the hot paths allocate
    nothing; drivers drain it after each call when it is not empty.

Rules
-----

1. **Direct hand-off, FIFO.**  A connection that becomes available (returned,
   newly opened, or given back by an abandoned ticket) goes to the oldest
   WAITING ticket if there is one, else to idle.  ``checkout`` only looks at
   idle, and idle is empty whenever a ticket waits, so a newcomer never
   overtakes a waiter.
2. **Nothing is lost on abandon.**  When a caller's wait ends without a
   connection (timeout, cancellation, ``gevent.Timeout``, ...), the driver
   calls :meth:`Core.abandon`.  If the ticket was SERVED in the meantime --
   the hand-off raced the timeout -- the connection is taken back and handed
   to the next waiter (psycopg_pool's accept/reject handshake as one pure
   transition).
3. **Lost capacity is refilled at once.**  Every path that removes a record
   (discard, failed check, retirement, failed connect) leaves the waiters in
   place, and the driver then calls :meth:`Core.plan_connects`, which asks
   for as many connects as waiters and ``min_size`` need within the limits.
   No waiter is stranded while the pool has room.
4. **Limits.**  Normally ``size + connecting <= max_size``; while callers wait
   the pool may grow to ``burst_limit``.  A record returned while the pool is
   above ``max_size`` and nobody waits is closed.
5. **Retirement.**  A record is closed instead of reused when it was
   discarded, the pool is closed, it predates the last ``drain``, it reached
   ``max_uses``, or its jittered ``max_lifetime`` deadline passed.

Invariants (checked by ``tests/core/test_core_stateful.py``)
------------------------------------------------------------

* ``size == len(idle) + len(busy)`` and ``size + connecting <= burst cap``.
* No ticket is WAITING while a record is idle.
* ``waiting`` equals the number of WAITING tickets in the queue.
* Every record ever created is exactly one of: idle, busy, or handed to the
  driver to close.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

from ._errors import PoolClosed, PoolTimeout, TooManyWaiters

__all__ = [
    "ABANDONED",
    "BUSY",
    "EXPIRED",
    "FAILED",
    "IDLE",
    "SERVED",
    "WAITING",
    "Core",
    "Record",
    "Samples",
    "Ticket",
]

WAITING: Final = 0
SERVED: Final = 1
ABANDONED: Final = 2
FAILED: Final = 3
EXPIRED: Final = 4

# record states
IDLE: Final = 0
BUSY: Final = 1  # checked out, or being reset or pinged
CLOSED: Final = 2

# deadline kinds (entries of Core.deadlines)
_LIFETIME: Final = 0
_IDLE: Final = 1
_PING: Final = 2
_LEAK: Final = 3


def _not_checked_out(conn: Any) -> ValueError:
    return ValueError(f"{conn!r} is not checked out from this pool (released twice, or never acquired here)")


class Record:
    """One open connection and its bookkeeping."""

    __slots__ = (
        "checked_out",
        "conn",
        "created",
        "expires",
        "holder",
        "idle_sched",
        "key",
        "leak_sched",
        "leaked",
        "ping_factor",
        "ping_sched",
        "pinged",
        "replacing",
        "returned",
        "returning",
        "state",
        "uses",
    )

    def __init__(self, conn: Any, now: float, expires: float) -> None:
        self.conn = conn
        self.key = id(conn)  # its key in Core.busy (computed once: checkout is the hot path)
        self.created = now
        self.returned = now  # when it last became idle (or was created)
        self.checked_out = now  # when it was last handed out
        self.uses = 0
        # lifetime deadline (math.inf: none); -math.inf once the pool was closed or drained
        # while it was checked out, so that one comparison on return covers every time rule
        self.expires = expires
        self.returning = False  # given back, waiting for its reset hook
        self.holder: object = None  # who holds it (leak reports); set by drivers
        self.leaked = False
        self.pinged = now  # last keepalive (or creation, or return)
        self.replacing = False  # expired; closed once its replacement is open
        self.state = IDLE
        # at most one pending deadline of each kind per record (see Core.housekeep)
        self.idle_sched = self.ping_sched = self.leak_sched = False
        self.ping_factor = 1.0  # jitter of the keepalive interval

    def __repr__(self) -> str:
        return f"<Record {self.conn!r} uses={self.uses}>"


class Ticket:
    """A caller waiting for a connection."""

    __slots__ = ("deadline", "error", "managed", "record", "since", "state", "waker")

    def __init__(self, waker: Any, now: float, deadline: float) -> None:
        self.state: int = WAITING
        self.record: Record | None = None
        self.error: BaseException | None = None
        self.waker = waker
        self.since = now
        self.deadline = deadline
        self.managed = False  # in Core.timed: the housekeeper expires it, no timer of its own


class Samples:
    """The last ``size`` values of a measurement (a bounded deque), for percentiles.

    ``zeros`` counts values known to be 0 that were not stored (a checkout
    that found an idle connection did not wait): :meth:`percentile` weighs
    them in by their share of all values, so the fast path stores nothing.
    """

    __slots__ = ("count", "max", "values", "zeros")

    def __init__(self, size: int = 1024) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.count = 0  # values added so far, stored or pushed out
        self.zeros = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.values.append(value)
        self.count += 1
        if value > self.max:  # noqa: PLR1730 (cheaper than a call to max() on the hot path)
            self.max = value

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the values (stored ones and ``zeros``); 0.0 when empty."""
        if not self.values:
            return 0.0
        zero_share = self.zeros / (self.zeros + self.count)
        if q <= zero_share:
            return 0.0
        return quantile(self.values, (q - zero_share) / (1.0 - zero_share))


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank); 0.0 when there are none."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return 0.0
    return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]


def validate_sizes(min_size: Any, max_size: Any, burst_limit: Any) -> None:
    """Raise ``TypeError``/``ValueError`` naming the parameter unless the sizes make sense."""
    for pname, value in (("min_size", min_size), ("max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{pname} must be an int, got {type(value).__name__}")
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    if min_size < 0:
        raise ValueError(f"min_size must be 0 or more, got {min_size}")
    if min_size > max_size:
        raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
    if burst_limit is not None:
        if isinstance(burst_limit, bool) or not isinstance(burst_limit, int):
            raise TypeError(f"burst_limit must be an int or None, got {type(burst_limit).__name__}")
        if burst_limit < max_size:
            raise ValueError(f"burst_limit ({burst_limit}) must be None or at least max_size ({max_size})")


class Core:
    """The pool's state and rules; see the module docstring."""

    def __init__(
        self,
        *,
        min_size: int = 0,
        max_size: int = 10,
        burst_limit: int | None = None,
        max_waiting: int = 0,
        lifo: bool = True,
        max_connecting: int = 4,
        max_uses: int | None = None,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        keepalive_interval: float | None = None,
        leak_timeout: float | None = None,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        rng: Callable[[], float] | None = None,
    ) -> None:
        validate_sizes(min_size, max_size, burst_limit)
        self._config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.min_size = min_size
        self.max_size = max_size
        self.burst_limit = burst_limit
        # Whether idle connections have timers (idle expiry, keepalive).
        self._track_idle = max_idle is not None or keepalive_interval is not None
        # Whether a return must go through _place: the size may exceed max_size (a burst, or a
        # resize down), so a returning connection may find the pool full; or its idle timers
        # must restart. Only then does the release hot path look at the size. (A record being
        # replaced is never out: it expired, so checkout and ping_done retire it.)
        self.place_on_return = burst_limit is not None or self._track_idle
        self.max_waiting = max_waiting
        self.lifo = lifo
        self.max_connecting = max_connecting
        self.max_uses = max_uses
        self.uses_cap: float = math.inf if max_uses is None else max_uses  # one comparison on return
        # Whether a checkout is a bare take from idle: the pool is open, no idle record can
        # expire (no max_lifetime: only drain and close retire one, and they empty idle) and
        # none needs a leak timer. The sync driver's acquire then skips checkout().
        self.plain_checkout = max_lifetime is None and leak_timeout is None
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.keepalive_interval = keepalive_interval
        self.leak_timeout = leak_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        if rng is None:
            import random

            rng = random.random
        self._rng = rng

        self.idle: deque[Record] = deque()
        # the next idle record to hand out (the end LIFO reuse takes from: no lifo test per checkout)
        self.take_idle = self.idle.pop if lifo else self.idle.popleft
        self.busy: dict[int, Record] = {}
        self.waiters: deque[Ticket] = deque()
        self.timed: deque[Ticket] = deque()  # managed waiting tickets, by deadline (see *timed*)
        self.waiting = 0
        self.connecting = 0
        self.to_close: list[Record] = []
        self.attention = False  # to_close filled, or a deadline moved earlier: drivers look
        self.returned_leaks: list[tuple[Record, float]] = []  # leaked checkouts now returned
        self.closed = False
        self.force_closed: dict[int, Any] = {}  # id -> conn retired by force_close(), still held

        # time rules: a heap of (when, seq, kind, record), checked lazily
        self.deadlines: list[tuple[float, int, int, Record]] = []
        self._seq = 0
        self.wake_at = math.inf  # when the housekeeper plans to look next
        self.wake_early = False  # a deadline earlier than wake_at was added
        self.replacing = 0  # expired records waiting for their replacement

        # health of the connect path
        self.failures = 0  # consecutive failed connects (0 after a success)
        self.last_error: BaseException | None = None

        # counters
        self._retired_uses = 0  # checkouts of closed records: see ``acquired``
        self.timeouts = 0
        self.connects = 0
        self.connect_errors = 0
        self.closed_count = 0
        self.discarded = 0
        self.leaks = 0
        self.wait_times = Samples()
        # the last 1024 use times: no count, maximum or zeros to keep (Samples' extras), so
        # that a return only appends (in C)
        self.use_times: deque[float] = deque(maxlen=1024)
        self.connect_times = Samples(256)

    # ------------------------------------------------------------ queries

    @property
    def size(self) -> int:
        """Open connections: idle plus checked out."""
        return len(self.idle) + len(self.busy)

    @property
    def acquired(self) -> int:
        """Checkouts so far (a use handed back by :meth:`unget` does not count).

        Derived from the records' use counts rather than counted on every
        checkout: those of closed records plus those of the open ones.
        """
        live = sum(rec.uses for rec in self.idle) + sum(rec.uses for rec in self.busy.values())
        return self._retired_uses + live

    @property
    def cap(self) -> int:
        """The size the pool may reach right now: ``burst_limit`` while callers wait."""
        if self.waiting and self.burst_limit is not None:
            return self.burst_limit
        return self.max_size

    # ----------------------------------------------------------- checkout

    def checkout(self, now: float) -> Record | None:
        """The fast path: an idle record handed out at once, or ``None``.

        Raises :class:`PoolClosed` if the pool is closed.  Expired idle
        records met on the way are retired (appended to ``to_close``).
        """
        if self.closed:
            raise PoolClosed("the pool is closed")
        idle = self.idle
        while idle:
            rec = self.take_idle()
            if rec.expires <= now:
                self._retire(rec)
                continue
            self.busy[rec.key] = rec
            rec.state = BUSY
            rec.uses += 1  # counts in ``acquired``; no wait sample: stats() counts a wait of 0
            rec.checked_out = now
            if self.leak_timeout is not None and not rec.leak_sched:
                self._schedule_leak(rec)
            return rec
        return None

    def enqueue(self, now: float, waker: Any, deadline: float = math.inf, managed: bool = False) -> Ticket:
        """Queue a caller that found no idle connection, to wait until ``deadline``.

        Raises :class:`TooManyWaiters` when ``max_waiting`` callers already
        wait.  With ``managed`` the ticket joins ``timed`` when its deadline
        keeps that queue sorted (``ticket.managed`` says whether it did):
        :meth:`housekeep` then expires it, and the driver waits without a
        timer.  Sets ``attention`` when the driver should call
        :meth:`plan_connects` (the pool has room to grow) or wake the
        housekeeper earlier (``wake_early``).
        """
        if self.closed:
            raise PoolClosed("the pool is closed")
        if self.max_waiting and self.waiting >= self.max_waiting:
            raise TooManyWaiters(f"{self.waiting} callers already waiting (max_waiting={self.max_waiting})")
        ticket = Ticket(waker, now, deadline)
        self.waiters.append(ticket)
        self.waiting += 1
        if managed and deadline != math.inf:
            timed = self.timed
            if not timed or deadline >= timed[-1].deadline:
                timed.append(ticket)
                ticket.managed = True
                if deadline < self.wake_at:
                    self.wake_at = deadline
                    self.wake_early = self.attention = True
        pending = self.connecting
        cap = self.max_size if self.burst_limit is None else self.burst_limit  # self.cap, now that one waits
        if pending < self.max_connecting and len(self.idle) + len(self.busy) + pending < cap:
            self.attention = True  # room to grow: plan_connects may start one for this waiter
        return ticket

    def abandon(self, ticket: Ticket, now: float) -> Ticket | None:
        """The caller of ``ticket`` stopped waiting (timeout, cancellation, error).

        Returns the ticket of the next waiter to wake if a connection that had
        been handed to ``ticket`` was passed on, else ``None``.  Idempotent.
        """
        state = ticket.state
        ticket.state = ABANDONED
        if state == WAITING:
            self.waiting -= 1
            self._compact()
            return None
        if state == SERVED:
            rec = ticket.record
            ticket.record = None
            assert rec is not None
            return self.unget(rec, now)
        return None

    def unget(self, rec: Record, now: float) -> Ticket | None:
        """Take back a record handed out to a caller who never got it (cancelled on the way).

        As if the checkout had not happened: the use is not counted, and the
        record goes to the oldest waiter or to idle.  Returns the ticket to
        wake, if any.
        """
        if self.busy.pop(rec.key, None) is not rec:
            return None  # retired meanwhile by force_close()
        rec.uses -= 1
        return self._recycle(rec, now, False)

    def _compact(self) -> None:
        """Drop tickets no longer waiting from the queues once they outnumber the waiting ones."""
        if len(self.waiters) > 2 * self.waiting + 32:
            self.waiters = deque(t for t in self.waiters if t.state == WAITING)
        if len(self.timed) > 2 * self.waiting + 32:
            self.timed = deque(t for t in self.timed if t.state == WAITING)

    def timed_out(self, ticket: Ticket, now: float) -> PoolTimeout:
        """Abandon a ticket whose wait expired and build the error to raise.

        The caller must check ``ticket.state == SERVED`` first (a connection
        that arrived together with the timeout is taken, not thrown away).
        An EXPIRED ticket has left the queue already.
        """
        self.abandon(ticket, now)
        self.timeouts += 1
        return self.timeout_error(now - ticket.since)

    def timeout_error(self, waited: float) -> PoolTimeout:
        """A :class:`PoolTimeout` saying why no connection came: busy, or cannot connect."""
        state = (
            f"size={self.size}, idle={len(self.idle)}, in_use={len(self.busy)}, "
            f"waiting={self.waiting}, connecting={self.connecting}, max_size={self.max_size}"
        )
        if self.failures:
            err = PoolTimeout(
                f"no connection after {waited:.3f} s: the pool cannot connect "
                f"({self.failures} failed attempts in a row, last: {self.last_error!r}); {state}"
            )
            err.__cause__ = self.last_error
        else:
            err = PoolTimeout(f"no connection after {waited:.3f} s: all connections are busy; {state}")
        return err

    # ------------------------------------------------------------ checkin

    def lookup(self, conn: Any) -> Record | None:
        """The busy record of ``conn``.

        ``None`` for a connection :meth:`force_close` retired (its release is
        accepted, once); ``ValueError`` for a foreign or returned object.
        """
        rec = self.busy.get(id(conn))  # (a record holds its connection: no other live object has its id)
        if rec is None or rec.returning:
            self._refuse(conn)
            return None
        return rec

    def _refuse(self, conn: Any) -> None:
        """``conn`` is not checked out: fine once if :meth:`force_close` retired it, else ``ValueError``."""
        if self.force_closed.pop(id(conn), None) is not conn:  # (it holds conn: no id reuse)
            raise _not_checked_out(conn)

    def checkin(self, conn: Any, now: float, discard: bool = False) -> Ticket | None:
        """A connection comes back.  Returns the waiter to wake, if it was handed on.

        Raises ``ValueError`` if ``conn`` is not checked out from this pool
        (one :meth:`force_close` retired is accepted once, and nothing happens).
        A retired connection goes to ``to_close``; the driver then drains
        ``to_close`` and calls :meth:`plan_connects`.

        This is the general path.  ``BasePool.release`` handles the common
        return itself (the record is found, no rule applies to it: it goes to
        the oldest waiter or to idle) and calls this method for the rest.
        """
        rec = self.lookup(conn)
        if rec is None:
            return None
        return self.checkin_record(rec, now, discard)

    def begin_return(self, conn: Any) -> Record | None:
        """Mark ``conn`` as being returned (its reset hook runs before :meth:`checkin_record`).

        ``None``: nothing to return, :meth:`force_close` retired it (see :meth:`lookup`).
        """
        rec = self.lookup(conn)
        if rec is not None:
            rec.returning = True
        return rec

    def checkin_record(self, rec: Record, now: float, discard: bool = False) -> Ticket | None:
        """:meth:`checkin` for a record already looked up (or after its reset hook ran)."""
        if self.busy.pop(rec.key, None) is not rec:
            return None  # retired meanwhile by force_close()
        rec.returning = False
        self.use_times.append(now - rec.checked_out)
        if rec.leaked:
            rec.leaked = False
            self.returned_leaks.append((rec, now - rec.checked_out))
            self.attention = True
        return self._recycle(rec, now, discard)

    # ------------------------------------------------------------ connect

    def plan_connects(self) -> int:
        """How many connects to start now (their slots are reserved in ``connecting``)."""
        if self.closed:
            return 0
        pending = self.connecting
        size = len(self.idle) + len(self.busy)
        want = max(self.waiting - pending, self.min_size - (size - self.replacing) - pending)
        room = self.cap - size - pending
        n = min(want, room, self.max_connecting - pending)
        if n <= 0:
            return 0
        self.connecting += n
        return n

    def connect_done(self, conn: Any, now: float, duration: float = 0.0) -> Ticket | None:
        """A planned connect succeeded.  Returns the waiter to wake, if any."""
        self.connecting -= 1
        self.connects += 1
        self.failures = 0
        self.connect_times.add(duration)
        expires = math.inf
        if self.max_lifetime is not None:
            expires = now + self.max_lifetime * (1.0 - 0.1 * self._rng())
        rec = Record(conn, now, expires)
        rec.ping_factor = 1.0 - 0.2 * self._rng()
        if self.closed:
            self._retire(rec)
            return None
        if expires != math.inf:
            self._push(expires, _LIFETIME, rec)
        if self.replacing:
            self._retire_replaced()
        return self.place(rec, now)

    def connect_failed(self, error: BaseException) -> float | None:
        """A planned connect failed.

        Returns the delay after which the same worker should try again
        (keeping its slot), or ``None`` when the connection is no longer
        needed (the slot is freed).  The delay grows exponentially with the
        number of consecutive failures, with jitter.
        """
        self.connect_errors += 1
        self.failures += 1
        self.last_error = error
        if self.closed or not self._still_needed():
            self.connecting -= 1
            return None
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** min(self.failures - 1, 30))
        return delay * (0.5 + 0.5 * self._rng())

    def connect_cancelled(self) -> None:
        """A planned connect was stopped before finishing (pool closing, cancellation)."""
        self.connecting -= 1

    def _still_needed(self) -> bool:
        # Counting this attempt's own slot in ``connecting``.
        size = len(self.idle) + len(self.busy)
        return self.waiting > 0 or size + self.connecting <= self.min_size

    # --------------------------------------------------------- management

    def discard_record(self, rec: Record) -> None:
        """Close a checked-out record that failed its checkout check."""
        del self.busy[rec.key]
        self.discarded += 1
        self._retire(rec)

    def close(self) -> list[Ticket]:
        """Close the pool: returns the waiters to wake (they are FAILED with :class:`PoolClosed`).

        Idle records go to ``to_close``; busy ones are retired as they come
        back (or by :meth:`force_close`).  Idempotent.
        """
        if self.closed:
            return []
        self.closed = True
        self.plain_checkout = False  # checkout() raises PoolClosed
        self._retire_on_return()
        while self.idle:
            self._retire(self.idle.popleft())
        failed = []
        for ticket in self.waiters:
            if ticket.state == WAITING:
                ticket.state = FAILED
                ticket.error = PoolClosed("the pool was closed while waiting for a connection")
                failed.append(ticket)
        self.waiters.clear()
        self.timed.clear()
        self.waiting = 0
        return failed

    def force_close(self) -> None:
        """Retire the connections still checked out (``close`` ran out of patience).

        Their later release is accepted silently (``force_closed`` remembers
        them, so that a foreign object is still refused).
        """
        for key, rec in list(self.busy.items()):
            self.force_closed[key] = rec.conn
            self._retire(rec)
        self.busy.clear()

    def drain(self) -> None:
        """Close idle connections now and retire the checked-out ones when they return."""
        self._retire_on_return()
        while self.idle:
            self._retire(self.idle.popleft())

    def _retire_on_return(self) -> None:
        """Checked-out records (held, being reset or pinged) are closed when they come back."""
        for rec in self.busy.values():
            rec.expires = -math.inf

    def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change the limits; idle connections above the new ``max_size`` are closed."""
        new_min = self.min_size if min_size is None else min_size
        new_max = self.max_size if max_size is None else max_size
        validate_sizes(new_min, new_max, None)
        if self.burst_limit is not None and self.burst_limit < new_max:
            self.burst_limit = new_max
        if new_max < self.max_size:
            self.place_on_return = True
        self.min_size, self.max_size = new_min, new_max
        while self.idle and self.size > new_max:
            self._retire(self.idle.popleft())

    # ------------------------------------------------------- time rules

    def housekeep(self, now: float) -> tuple[list[Record], list[Record], list[Ticket]]:
        """Apply the time rules due by ``now``.

        Returns (records to ping, newly leaked records, EXPIRED tickets to wake).

        Runs the deadlines that are due: a record past its lifetime is
        retired (or, if ``min_size`` needs it, replaced first and retired when
        the replacement is open); an idle record above ``min_size`` past
        ``max_idle`` is closed; an idle record due for keepalive is taken out
        of idle (the driver pings it and calls :meth:`ping_done`); a checkout
        held past ``leak_timeout`` is reported once.  Each record has at most
        one pending deadline of each kind, so the heap stays as small as the
        pool.  Managed tickets (``timed``) whose deadline passed leave the
        queue as EXPIRED; their callers raise :class:`PoolTimeout`.
        Afterwards ``wake_at`` says when to call again.
        """
        pings: list[Record] = []
        leaks: list[Record] = []
        expired: list[Ticket] = []
        timed = self.timed
        while timed:
            ticket = timed[0]
            if ticket.state == WAITING:
                if ticket.deadline > now:
                    break
                ticket.state = EXPIRED
                self.waiting -= 1
                expired.append(ticket)
            timed.popleft()
        if expired:
            self._compact()
        heap = self.deadlines
        while heap and heap[0][0] <= now:
            _, _, kind, rec = heapq.heappop(heap)
            if rec.state == CLOSED:
                continue
            if kind == _LIFETIME:
                if rec.state == IDLE:
                    self._expire(rec)
            elif kind == _IDLE:
                rec.idle_sched = False
                if rec.state != IDLE:
                    continue
                due = rec.returned + self.max_idle  # type: ignore[operator]
                if due > now:
                    self._schedule_idle(rec)
                elif self.size - self.replacing > self.min_size:
                    self.idle.remove(rec)
                    self._retire(rec)
                else:
                    rec.idle_sched = True
                    self._push(now + self.max_idle, _IDLE, rec)  # type: ignore[operator]
            elif kind == _PING:
                rec.ping_sched = False
                if rec.state != IDLE:
                    continue
                if rec.pinged + self.keepalive_interval * rec.ping_factor > now:  # type: ignore[operator]
                    self._schedule_idle(rec)
                    continue
                self.idle.remove(rec)
                self.busy[rec.key] = rec
                rec.state = BUSY
                rec.returning = True  # not releasable by users
                pings.append(rec)
            else:  # _LEAK
                rec.leak_sched = False
                if rec.state != BUSY or rec.returning:
                    continue
                if rec.checked_out + self.leak_timeout > now:  # type: ignore[operator]
                    self._schedule_leak(rec)
                elif not rec.leaked:
                    rec.leaked = True
                    self.leaks += 1
                    leaks.append(rec)
        self.wake_at = heap[0][0] if heap else math.inf
        if timed and timed[0].deadline < self.wake_at:
            self.wake_at = timed[0].deadline
        self.wake_early = False
        return pings, leaks, expired

    def ping_done(self, rec: Record, ok: bool, now: float) -> Ticket | None:
        """A keepalive ping finished; a failed one closes the record (refill follows)."""
        if self.busy.pop(rec.key, None) is not rec:
            return None  # retired meanwhile by force_close()
        rec.returning = False
        if not ok:
            self.discarded += 1
            self._retire(rec)
            return None
        rec.pinged = now
        if rec.expires <= now:
            self._retire(rec)
            return None
        return self.place(rec, now, touch=False)

    def _expire(self, rec: Record) -> None:
        """An idle record's lifetime ended: retire it, or replace it first if min_size needs it."""
        if rec.replacing:
            return
        if self.size - self.replacing > self.min_size or self.size + self.connecting >= self.max_size:
            self.idle.remove(rec)
            self._retire(rec)
        else:
            rec.replacing = True
            self.replacing += 1
            self.attention = True  # plan_connects opens the replacement

    def _retire_replaced(self) -> None:
        for rec in self.idle:
            if rec.replacing:
                self.idle.remove(rec)
                self._retire(rec)
                return

    def _push(self, when: float, kind: int, rec: Record) -> None:
        self._seq += 1
        heapq.heappush(self.deadlines, (when, self._seq, kind, rec))
        if when < self.wake_at:
            self.wake_at = when
            self.wake_early = self.attention = True

    def _schedule_idle(self, rec: Record) -> None:
        if self.max_idle is not None and not rec.idle_sched:
            rec.idle_sched = True
            self._push(rec.returned + self.max_idle, _IDLE, rec)
        if self.keepalive_interval is not None and not rec.ping_sched:
            rec.ping_sched = True
            self._push(rec.pinged + self.keepalive_interval * rec.ping_factor, _PING, rec)

    def _schedule_leak(self, rec: Record) -> None:
        rec.leak_sched = True
        self._push(rec.checked_out + self.leak_timeout, _LEAK, rec)  # type: ignore[operator]

    def after_fork(self) -> Core:
        """A fresh core with the same settings, for a forked child (the parent's connections are dropped)."""
        return Core(**self._config)

    def stats(self) -> dict[str, Any]:
        """The numbers behind :class:`connpool.PoolStats` (milliseconds for times)."""
        wait, use = self.wait_times, self.use_times
        # Checkouts that waited left a sample each; the others waited 0 (nothing stored on the fast path).
        acquired = self.acquired
        wait.zeros = max(0, acquired - wait.count)
        return {
            "min_size": self.min_size,
            "max_size": self.max_size,
            "size": self.size,
            "idle": len(self.idle),
            "in_use": len(self.busy),
            "waiting": self.waiting,
            "connecting": self.connecting,
            "acquired": acquired,
            "timeouts": self.timeouts,
            "connects": self.connects,
            "connect_errors": self.connect_errors,
            "closed": self.closed_count,
            "discarded": self.discarded,
            "leaks": self.leaks,
            "wait_p50": wait.percentile(0.5) * 1000.0,
            "wait_p99": wait.percentile(0.99) * 1000.0,
            "wait_max": wait.max * 1000.0,
            "use_p50": quantile(use, 0.5) * 1000.0,
            "use_p99": quantile(use, 0.99) * 1000.0,
            "connect_p50": self.connect_times.percentile(0.5) * 1000.0,
        }

    # ------------------------------------------------------------ helpers

    def _recycle(self, rec: Record, now: float, discard: bool) -> Ticket | None:
        """A record no caller holds any more: retire it (rule 5) or make it available."""
        if discard or rec.expires <= now or rec.uses >= self.uses_cap:
            if discard:
                self.discarded += 1
            self._retire(rec)
            return None
        return self.place(rec, now)

    def place(self, rec: Record, now: float, touch: bool = True) -> Ticket | None:
        """Give an available record to the oldest waiter, else to idle (or close it if over size).

        Drivers call it for a return that needs more than an append to idle
        (``place_on_return``: a burst or a resize down, or idle timers).

        ``touch``: the record was used (a return), so its idle and keepalive
        timers restart; a keepalive ping does not count as use.
        """
        if self.waiting:
            return self.hand_over(rec, now)
        if len(self.idle) + len(self.busy) >= self.max_size or (rec.replacing and self.size >= self.min_size):
            self._retire(rec)
            return None
        if touch:
            rec.returned = rec.pinged = now
        rec.state = IDLE
        self.idle.append(rec)
        if self._track_idle:
            self._schedule_idle(rec)
        return None

    def hand_over(self, rec: Record, now: float) -> Ticket:
        """Give an available record to the oldest waiter (there is one); returns its ticket.

        Also the release fast path's hand-off (see the module docstring).
        """
        waiters = self.waiters
        while True:
            ticket = waiters.popleft()
            if ticket.state == WAITING:
                break
        self.waiting -= 1
        ticket.state = SERVED
        ticket.record = rec
        if ticket.managed:  # usually the head of ``timed``: drop it and any stale ones behind
            timed = self.timed
            while timed and timed[0].state != WAITING:
                timed.popleft()
        self.busy[rec.key] = rec
        rec.state = BUSY
        rec.uses += 1
        rec.checked_out = now
        wait = self.wait_times  # Samples.add, inlined (every hand-over)
        value = now - ticket.since
        wait.values.append(value)
        wait.count += 1
        if value > wait.max:  # noqa: PLR1730
            wait.max = value
        if self.leak_timeout is not None and not rec.leak_sched:
            self._schedule_leak(rec)
        return ticket

    def _retire(self, rec: Record) -> None:
        if rec.replacing:
            rec.replacing = False
            self.replacing -= 1
        rec.state = CLOSED
        self._retired_uses += rec.uses
        self.closed_count += 1
        self.to_close.append(rec)
        self.attention = True
