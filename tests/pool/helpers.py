"""Stand-in connections and scheduler wrappers shared by the pool tests."""

from __future__ import annotations

import itertools
from typing import Any


class FakeConn:
    """A connection that records what the pool did to it."""

    ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self.ids)
        self.closed = False
        self.resets = 0

    def close(self) -> None:
        assert not self.closed, f"{self!r} closed twice"
        self.closed = True

    def __repr__(self) -> str:
        return f"<FakeConn {self.id}{' closed' if self.closed else ''}>"


class Factory:
    """A connect function that counts, can fail on demand, and remembers every connection."""

    def __init__(self, fail: int = 0, error: BaseException | None = None) -> None:
        self.made: list[FakeConn] = []
        self.fail = fail  # how many of the next attempts fail (-1: all)
        self.error = error or ConnectionRefusedError("connection refused (test)")
        self.attempts = 0

    def __call__(self) -> FakeConn:
        self.attempts += 1
        if self.fail:
            self.fail -= 1 if self.fail > 0 else 0
            raise self.error
        conn = FakeConn()
        self.made.append(conn)
        return conn

    async def aconnect(self) -> FakeConn:
        return self()

    def open_conns(self) -> list[FakeConn]:
        return [c for c in self.made if not c.closed]


class Interrupt(BaseException):
    """Stands for a cancellation arriving at the worst moment."""


class InterruptingEvent:
    """Wraps an event: once its wait returns (even with the event set), raise ``Interrupt``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def set(self) -> None:
        self._inner.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._inner.wait(timeout)
        raise Interrupt

    def is_set(self) -> bool:
        return bool(self._inner.is_set())

    def clear(self) -> None:
        self._inner.clear()


class AsyncInterruptingEvent(InterruptingEvent):
    async def wait(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        await self._inner.wait(timeout)
        raise Interrupt


class SchedulerProxy:
    """Forwards every scheduler member to ``inner``; subclasses override what they change.

    The protocol's members are spelled out so that ``isinstance`` checks against
    the scheduler protocols pass.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name
        self.family = inner.family

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def event(self) -> Any:
        return self._inner.event()

    def waiter(self) -> Any:
        return self._inner.waiter()

    def spawn(self, *a: Any) -> Any:
        return self._inner.spawn(*a)

    def sleep(self, s: float) -> Any:
        return self._inner.sleep(s)

    def queue(self) -> Any:
        return self._inner.queue()

    def timeout(self, s: float | None) -> Any:
        return self._inner.timeout(s)

    def lock(self) -> Any:
        return self._inner.lock()

    def monotonic(self) -> float:
        return float(self._inner.monotonic())

    def task_group(self) -> Any:
        return self._inner.task_group()

    def running(self) -> bool:
        return bool(self._inner.running())


class ArmedScheduler(SchedulerProxy):
    """A scheduler proxy whose events, while armed, are interrupting ones."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.armed = False

    def event(self) -> Any:
        return self._arm(self._inner.event())

    def waiter(self) -> Any:
        return self._arm(self._inner.waiter())

    def _arm(self, event: Any) -> Any:
        if not self.armed:
            return event
        return AsyncInterruptingEvent(event) if self.family == "async" else InterruptingEvent(event)


def wait_until(sched: Any, predicate: Any, timeout: float = 5.0) -> None:
    """Yield to other tasks until ``predicate()`` holds (fails the test after ``timeout``)."""
    deadline = sched.monotonic() + timeout
    while not predicate():
        assert sched.monotonic() < deadline, "condition not reached in time"
        sched.sleep(0.001)


async def await_until(sched: Any, predicate: Any, timeout: float = 5.0) -> None:
    """``wait_until`` for async tests."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await sched.sleep(0.001)


def _books(pool: Any, factory: Factory) -> bool:
    stats = pool.stats()
    assert stats.size == stats.idle + stats.in_use
    return len(factory.open_conns()) == stats.size


def assert_consistent(sched: Any, pool: Any, factory: Factory) -> None:
    """Nothing lost: every connection ever opened is closed or in the pool, gauges add up.

    Closing happens in the background, so the books may take a moment to balance.
    """
    wait_until(sched, lambda: _books(pool, factory))


async def aassert_consistent(sched: Any, pool: Any, factory: Factory) -> None:
    """``assert_consistent`` for async tests."""
    await await_until(sched, lambda: _books(pool, factory))


class FakeClock(SchedulerProxy):
    """A scheduler proxy with a clock the test moves: hours of pool time pass in milliseconds.

    Events' waits return after a few real milliseconds at most, so that
    background tasks re-read the fake clock promptly.  Waiters (what a caller
    of ``acquire`` parks on) are the real ones: a waiter that returns unset is
    a timed-out acquire, and the caller must not time out because a connect
    took a few real milliseconds on a busy machine.
    """

    def __init__(self, inner: Any, step: float = 0.002) -> None:
        super().__init__(inner)
        self.now = 1000.0
        self._step = step

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def event(self) -> Any:
        return _FastEvent(self._inner.event(), self._step)

    def sleep(self, s: float) -> Any:
        return self._inner.sleep(min(s, self._step))


class _FastEvent:
    """An event whose waits last at most ``step`` real seconds (the caller re-checks the fake clock)."""

    def __init__(self, inner: Any, step: float) -> None:
        self._inner = inner
        self._step = step

    def set(self) -> None:
        self._inner.set()

    def clear(self) -> None:
        self._inner.clear()

    def is_set(self) -> bool:
        return bool(self._inner.is_set())

    def wait(self, timeout: float | None = None) -> Any:
        # sync: the result; async: the coroutine, awaited by the caller
        return self._inner.wait(self._step if timeout is None else min(timeout, self._step))
