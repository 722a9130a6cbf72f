"""The SyncScheduler contract: the same test bodies on threading, gevent and eventlet.

Each test takes the ``sched`` fixture (one run per sync backend enabled in
this process, see ``tests/conftest.py``).  Tests wait on events rather than
on long sleeps; the few timeouts are short.  Nothing here assumes the process
is, or is not, monkey-patched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from connpool.backends import SyncEvent, SyncLock, SyncQueue, SyncScheduler, SyncWaiter, TaskHandle

GREEN = ("gevent", "eventlet")
SHORT = 0.05  # a timeout that is meant to expire
LONG = 5.0  # a timeout that is never meant to expire


def busy_wait(seconds: float) -> None:
    """Spend ``seconds`` without any switch point (no green timer can fire)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def wait_until(sched: SyncScheduler, predicate: Callable[[], bool], timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        sched.sleep(0.001)


def native_timeout(sched: SyncScheduler, seconds: float) -> Any:
    """The runtime's own timeout object (green backends only)."""
    if sched.name == "gevent":
        import gevent

        timer = gevent.Timeout(seconds)
        timer.start()
        return timer
    if sched.name == "eventlet":
        import eventlet

        return eventlet.Timeout(seconds)
    pytest.skip("threads have no native timeout")


def native_timeout_class(sched: SyncScheduler) -> type[BaseException]:
    if sched.name == "gevent":
        import gevent

        return gevent.Timeout  # type: ignore[no-any-return]
    import eventlet

    return eventlet.Timeout  # type: ignore[no-any-return]


def require_green(sched: SyncScheduler) -> None:
    if sched.name not in GREEN:
        pytest.skip("only meaningful on green runtimes")


# ------------------------------------------------------------------ shape


def test_scheduler_shape(sched: SyncScheduler) -> None:
    assert isinstance(sched, SyncScheduler)
    assert sched.family == "sync"
    assert sched.name in ("threading", *GREEN)
    assert isinstance(sched.event(), SyncEvent)
    assert isinstance(sched.queue(), SyncQueue)
    assert isinstance(sched.lock(), SyncLock)


# ----------------------------------------------------------------- events


def test_event_set_clear_is_set(sched: SyncScheduler) -> None:
    event = sched.event()
    assert not event.is_set()
    event.set()
    assert event.is_set()
    event.set()  # idempotent
    assert event.is_set()
    event.clear()
    assert not event.is_set()


def test_event_wait_on_set_event_returns_at_once(sched: SyncScheduler) -> None:
    event = sched.event()
    event.set()
    started = time.monotonic()
    assert event.wait() is True
    assert event.wait(0) is True
    assert event.wait(LONG) is True
    assert time.monotonic() - started < 1.0


def test_event_wait_timeout_returns_false(sched: SyncScheduler) -> None:
    event = sched.event()
    assert event.wait(0) is False
    started = time.monotonic()
    assert event.wait(SHORT) is False
    elapsed = time.monotonic() - started
    assert SHORT * 0.8 <= elapsed < LONG
    assert not event.is_set()


def test_event_set_from_spawned_task(sched: SyncScheduler) -> None:
    event = sched.event()
    handle = sched.spawn(event.set)
    assert event.wait(LONG) is True
    assert handle.join(LONG) is True


def test_event_wakes_every_waiter(sched: SyncScheduler) -> None:
    event = sched.event()
    ready = sched.queue()
    results = sched.queue()
    count = 10

    def waiter() -> None:
        ready.put(None)
        results.put(event.wait(LONG))

    handles = [sched.spawn(waiter) for _ in range(count)]
    for _ in range(count):
        ready.get(LONG)
    sched.sleep(0.01)  # let them park (the test holds either way)
    event.set()
    assert [results.get(LONG) for _ in range(count)] == [True] * count
    assert all(handle.join(LONG) for handle in handles)


def test_event_is_reusable(sched: SyncScheduler) -> None:
    event = sched.event()
    event.set()
    event.clear()
    assert event.wait(0.01) is False
    sched.spawn(event.set)
    assert event.wait(LONG) is True
    event.clear()
    assert event.wait(0.01) is False


def test_green_event_set_never_switches(sched: SyncScheduler) -> None:
    require_green(sched)
    event = sched.event()
    got: list[bool] = []
    handle = sched.spawn(lambda: got.append(event.wait(LONG)))
    sched.sleep(0.01)  # the waiter parks
    event.set()
    assert got == []  # set() did not switch to the waiter
    event.clear()  # a waiter woken by set() still reports True
    assert handle.join(LONG)
    assert got == [True]


def test_green_event_waiter_interrupted_is_not_woken_later(sched: SyncScheduler) -> None:
    require_green(sched)
    event = sched.event()
    timer = native_timeout(sched, 0.01)

    def interrupted_wait() -> None:
        try:
            event.wait(LONG)
        finally:
            timer.cancel()

    with pytest.raises(native_timeout_class(sched)) as info:
        interrupted_wait()
    assert info.value is timer
    event.set()  # must not switch into this greenlet, which is no longer waiting
    sched.sleep(0.01)
    event.clear()
    assert event.wait(0.01) is False


# ----------------------------------------------------------------- waiter


def test_waiter_set_before_wait_returns_at_once(sched: SyncScheduler) -> None:
    waiter = sched.waiter()  # type: ignore[attr-defined]
    assert isinstance(waiter, SyncWaiter)
    waiter.set()
    waiter.set()  # a second set is harmless
    started = time.monotonic()
    assert waiter.wait(LONG) is True
    assert time.monotonic() - started < 1.0


def test_waiter_set_from_spawned_task(sched: SyncScheduler) -> None:
    waiter = sched.waiter()  # type: ignore[attr-defined]
    parked = sched.event()

    def wake() -> None:
        parked.wait(LONG)
        sched.sleep(0.01)  # let the main task park in wait()
        waiter.set()

    handle = sched.spawn(wake)
    parked.set()
    assert waiter.wait(LONG) is True
    assert handle.join(LONG)


def test_waiter_without_timeout_waits_for_set(sched: SyncScheduler) -> None:
    waiter = sched.waiter()  # type: ignore[attr-defined]
    got: list[bool] = []
    handle = sched.spawn(lambda: got.append(waiter.wait(None)))
    sched.sleep(0.02)
    assert got == []
    waiter.set()
    assert handle.join(LONG)
    assert got == [True]


def test_waiter_timeout_returns_false_and_a_late_set_is_harmless(sched: SyncScheduler) -> None:
    waiter = sched.waiter()  # type: ignore[attr-defined]
    started = time.monotonic()
    assert waiter.wait(SHORT) is False
    assert time.monotonic() - started >= SHORT * 0.9
    waiter.set()  # nobody waits any more: nothing to wake, nothing breaks
    sched.sleep(0.01)


def test_green_waiter_set_never_switches(sched: SyncScheduler) -> None:
    require_green(sched)
    waiter = sched.waiter()  # type: ignore[attr-defined]
    got: list[bool] = []
    handle = sched.spawn(lambda: got.append(waiter.wait(LONG)))
    sched.sleep(0.01)  # the waiter parks
    waiter.set()
    assert got == []  # set() did not switch to the waiter
    assert handle.join(LONG)
    assert got == [True]


def test_green_waiter_interrupted_is_not_woken_later(sched: SyncScheduler) -> None:
    require_green(sched)
    waiter = sched.waiter()  # type: ignore[attr-defined]
    timer = native_timeout(sched, 0.01)
    try:
        with pytest.raises(native_timeout_class(sched)) as info:
            waiter.wait(LONG)
    finally:
        timer.cancel()
    assert info.value is timer
    waiter.set()  # must not switch into this greenlet, which is no longer waiting
    other = sched.waiter()
    assert other.wait(0.02) is False  # a stray switch would end this wait early, or with True


# ------------------------------------------------------------------ queue


def test_queue_is_fifo(sched: SyncScheduler) -> None:
    queue = sched.queue()
    assert queue.qsize() == 0
    for item in range(5):
        queue.put(item)
    assert queue.qsize() == 5
    assert [queue.get(LONG) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert queue.qsize() == 0


def test_queue_get_timeout_raises_timeout_error(sched: SyncScheduler) -> None:
    queue = sched.queue()
    with pytest.raises(TimeoutError):
        queue.get(0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        queue.get(SHORT)
    assert SHORT * 0.8 <= time.monotonic() - started < LONG


def test_queue_get_waits_for_put_from_other_task(sched: SyncScheduler) -> None:
    queue = sched.queue()

    def producer() -> None:
        sched.sleep(0.01)
        queue.put("a")
        queue.put("b")

    handle = sched.spawn(producer)
    assert queue.get(LONG) == "a"
    assert queue.get() == "b"
    assert handle.join(LONG)


def test_green_queue_put_never_switches(sched: SyncScheduler) -> None:
    require_green(sched)
    queue = sched.queue()
    got: list[object] = []
    handle = sched.spawn(lambda: got.append(queue.get(LONG)))
    sched.sleep(0.01)  # the getter parks
    queue.put(1)
    assert got == []  # put() did not switch to the getter
    assert handle.join(LONG)
    assert got == [1]
    assert queue.qsize() == 0


# ---------------------------------------------------------------- timeout


def test_timeout_overrun_raises_timeout_error(sched: SyncScheduler) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError), sched.timeout(0.02):
        sched.sleep(0.1)
    assert time.monotonic() - started < LONG


def test_timeout_is_transparent_otherwise(sched: SyncScheduler) -> None:
    with sched.timeout(LONG):
        sched.sleep(0)
    with sched.timeout(None):
        sched.sleep(0.01)
    with sched.timeout(0.02):
        pass
    sched.sleep(0.05)  # a finished block's timer never fires later


def test_timeout_lets_exceptions_through_untouched(sched: SyncScheduler) -> None:
    with pytest.raises(KeyError), sched.timeout(LONG):
        raise KeyError("x")

    # The deadline passed, but the block raised: its exception wins.
    def overrun_then_raise() -> None:
        with sched.timeout(0.01):
            busy_wait(0.03)
            raise KeyError("y")

    with pytest.raises(KeyError):
        overrun_then_raise()


def test_nested_timeouts_only_convert_their_own(sched: SyncScheduler) -> None:
    with sched.timeout(LONG):
        with pytest.raises(TimeoutError), sched.timeout(0.02):
            sched.sleep(0.1)
        sched.sleep(0)
    # The outer, shorter one fires inside the inner, longer one: the inner
    # lets it through and the outer converts it.
    with pytest.raises(TimeoutError), sched.timeout(0.02), sched.timeout(LONG):
        sched.sleep(0.1)


def test_timeout_does_not_convert_a_foreign_native_timeout(sched: SyncScheduler) -> None:
    require_green(sched)
    outer = native_timeout(sched, 0.02)

    def under_foreign_timeout() -> None:
        try:
            with sched.timeout(LONG):
                sched.sleep(1.0)
        finally:
            outer.cancel()

    with pytest.raises(native_timeout_class(sched)) as info:
        under_foreign_timeout()
    assert info.value is outer


# ------------------------------------------------------------------ spawn


def test_spawn_runs_concurrently_and_join_works(sched: SyncScheduler) -> None:
    ping, pong = sched.event(), sched.event()

    def left() -> None:
        ping.set()
        assert pong.wait(LONG)

    def right() -> None:
        assert ping.wait(LONG)
        pong.set()

    handles = [sched.spawn(left), sched.spawn(right)]
    assert all(isinstance(handle, TaskHandle) for handle in handles)
    assert all(handle.join(LONG) for handle in handles)
    assert all(handle.done() for handle in handles)


def test_spawn_passes_arguments(sched: SyncScheduler) -> None:
    results = sched.queue()
    handle = sched.spawn(lambda a, b: results.put(a + b), 2, 3)
    assert results.get(LONG) == 5
    assert handle.join(LONG)


def test_join_timeout_returns_false_while_running(sched: SyncScheduler) -> None:
    gate = sched.event()
    handle = sched.spawn(gate.wait, LONG)
    assert handle.done() is False
    assert handle.join(0.02) is False
    gate.set()
    assert handle.join(LONG) is True
    assert handle.done() is True
    assert handle.join(0) is True


def test_spawn_logs_exceptions_instead_of_raising(
    sched: SyncScheduler, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.ERROR, logger="connpool")

    def boom() -> None:
        raise ValueError("boom in background")

    handle = sched.spawn(boom)
    assert handle.join(LONG) is True
    assert handle.done()
    sched.sleep(0.01)  # let a hub that would print do so
    records = [
        record
        for record in caplog.records
        if record.name == "connpool" and record.levelno == logging.ERROR and record.exc_info
    ]
    assert len(records) == 1
    exc_info = records[0].exc_info
    assert exc_info is not None
    assert isinstance(exc_info[1], ValueError)
    assert "boom in background" not in capsys.readouterr().err  # not printed by the runtime


def test_green_spawn_logs_stray_native_timeout(
    sched: SyncScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    require_green(sched)
    caplog.set_level(logging.ERROR, logger="connpool")
    timeout_class = native_timeout_class(sched)

    def stray() -> None:
        raise timeout_class()

    assert sched.spawn(stray).join(LONG)
    assert any(record.exc_info and isinstance(record.exc_info[1], timeout_class) for record in caplog.records)


# ------------------------------------------------------------ sleep, lock


def test_sleep_zero_yields(sched: SyncScheduler) -> None:
    ran: list[int] = []
    handle = sched.spawn(ran.append, 1)
    sched.sleep(0)
    if sched.name in GREEN:
        assert ran == [1]  # one sleep(0) lets a ready greenlet run
    wait_until(sched, lambda: ran == [1])
    assert handle.join(LONG)


def test_lock_is_a_context_manager(sched: SyncScheduler) -> None:
    lock = sched.lock()
    with lock:
        pass
    assert lock.acquire() is True
    lock.release()
    with lock:
        pass


def test_green_lock_is_a_shared_noop(sched: SyncScheduler) -> None:
    require_green(sched)
    lock = sched.lock()
    assert lock is sched.lock()
    with lock, lock:  # no-op: re-entering never blocks
        pass


def test_threading_lock_excludes(sched: SyncScheduler) -> None:
    if sched.name != "threading":
        pytest.skip("green locks are no-ops by design")
    lock = sched.lock()
    order: list[str] = []

    def other() -> None:
        with lock:
            order.append("other")

    lock.acquire()
    handle = sched.spawn(other)
    sched.sleep(0.05)
    order.append("holder")
    lock.release()
    assert handle.join(LONG)
    assert order == ["holder", "other"]


# ------------------------------------------------------------------ clock


def test_monotonic_increases(sched: SyncScheduler) -> None:
    first = sched.monotonic()
    sched.sleep(0.01)
    second = sched.monotonic()
    assert second > first
    assert second - first >= 0.005
