"""The AsyncScheduler contract: the same test bodies on asyncio and trio.

Async tests are ``@pytest.mark.anyio`` and take ``asched`` (the scheduler of
the running ``anyio_backend``, see ``tests/conftest.py``); anyio's cancel
scopes play the part of a foreign cancellation.  A few plain tests drive
``asyncio.run`` / ``trio.run`` themselves to check objects created outside
any loop, the 3.10 timeout fallback and trio's ``MockClock``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from connpool.backends import ASYNC_BACKENDS, AsyncEvent, AsyncQueue, AsyncScheduler, AsyncWaiter, get_backend

# The same selection as tests/conftest.py (which is not importable as a module).
ASYNC_ENABLED = [
    name.strip()
    for name in os.environ.get("CONNPOOL_TEST_BACKENDS", "threading,asyncio,trio").split(",")
    if name.strip() in ASYNC_BACKENDS
]
if not ASYNC_ENABLED:
    # gevent/eventlet processes: nothing to run, and under eventlet's monkey-patching
    # anyio's pytest plugin (hence the ``anyio`` marker) may be unavailable.
    pytest.skip("no async backend enabled in this process", allow_module_level=True)

SHORT = 0.05  # a timeout that is meant to expire
LONG = 5.0  # a timeout that is never meant to expire

needs_asyncio = pytest.mark.skipif("asyncio" not in ASYNC_ENABLED, reason="asyncio not enabled here")
needs_trio = pytest.mark.skipif("trio" not in ASYNC_ENABLED, reason="trio not enabled here")


async def wait_until(asched: AsyncScheduler, predicate: Callable[[], bool], timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asched.sleep(0.001)


def error_records(caplog: pytest.LogCaptureFixture, kind: type[BaseException]) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "connpool"
        and record.levelno == logging.ERROR
        and record.exc_info
        and isinstance(record.exc_info[1], kind)
    ]


# ------------------------------------------------------------------ shape


@pytest.mark.anyio
async def test_scheduler_shape(asched: AsyncScheduler, anyio_backend: str) -> None:
    assert isinstance(asched, AsyncScheduler)
    assert asched.family == "async"
    assert asched.name == anyio_backend
    assert isinstance(asched.event(), AsyncEvent)
    assert isinstance(asched.queue(), AsyncQueue)
    assert asched.running()
    for other in ASYNC_ENABLED:
        if other != anyio_backend:
            other_sched = get_backend(other)
            assert isinstance(other_sched, AsyncScheduler)
            assert not other_sched.running()


def test_running_is_false_outside_any_loop() -> None:
    for name in ASYNC_ENABLED:
        sched = get_backend(name)
        assert isinstance(sched, AsyncScheduler)
        assert sched.running() is False


# ----------------------------------------------------------------- events


@pytest.mark.anyio
async def test_event_set_clear_is_set(asched: AsyncScheduler) -> None:
    event = asched.event()
    assert not event.is_set()
    event.set()
    assert event.is_set()
    event.set()
    assert event.is_set()
    event.clear()
    assert not event.is_set()


@pytest.mark.anyio
async def test_event_wait_on_set_event_returns_at_once(asched: AsyncScheduler) -> None:
    event = asched.event()
    event.set()
    started = time.monotonic()
    assert await event.wait() is True
    assert await event.wait(0) is True
    assert await event.wait(LONG) is True
    assert time.monotonic() - started < 1.0


@pytest.mark.anyio
async def test_event_wait_timeout_returns_false(asched: AsyncScheduler) -> None:
    event = asched.event()
    assert await event.wait(0) is False
    started = time.monotonic()
    assert await event.wait(SHORT) is False
    assert SHORT * 0.8 <= time.monotonic() - started < LONG
    assert not event.is_set()


@pytest.mark.anyio
async def test_event_set_from_another_task(asched: AsyncScheduler) -> None:
    event = asched.event()

    async def setter() -> None:
        await asched.sleep(0.01)
        event.set()

    async with asched.task_group() as group:
        group.spawn(setter)
        assert await event.wait(LONG) is True


@pytest.mark.anyio
async def test_event_wakes_every_waiter(asched: AsyncScheduler) -> None:
    event = asched.event()
    results: list[bool] = []
    count = 10

    async def waiter() -> None:
        results.append(await event.wait(LONG))

    async with asched.task_group() as group:
        for _ in range(count):
            group.spawn(waiter)
        await asched.sleep(0.01)  # let them park (the test holds either way)
        assert results == []
        event.set()
    assert results == [True] * count


@pytest.mark.anyio
async def test_event_is_reusable(asched: AsyncScheduler) -> None:
    event = asched.event()
    event.set()
    event.clear()
    assert await event.wait(0.01) is False
    async with asched.task_group() as group:
        group.spawn(asched.sleep, 0)
        event.set()
    assert await event.wait(LONG) is True
    event.clear()
    assert await event.wait(0.01) is False


@pytest.mark.anyio
async def test_event_woken_waiter_reports_true_after_clear(asched: AsyncScheduler) -> None:
    event = asched.event()
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await event.wait(LONG))

    async with asched.task_group() as group:
        group.spawn(waiter)
        await asched.sleep(0.01)
        event.set()
        event.clear()
    assert results == [True]


@pytest.mark.anyio
async def test_event_wait_cancellation_propagates(asched: AsyncScheduler) -> None:
    event = asched.event()
    with anyio.move_on_after(0.02) as scope:
        await event.wait()
    assert scope.cancelled_caught
    event.set()  # the cancelled waiter is gone: nothing to wake, nothing breaks
    await asched.sleep(0)
    assert await event.wait(0) is True


# ----------------------------------------------------------------- waiter


@pytest.mark.anyio
async def test_waiter_set_before_wait_returns_at_once(asched: AsyncScheduler) -> None:
    waiter = asched.waiter()  # type: ignore[attr-defined]
    assert isinstance(waiter, AsyncWaiter)
    waiter.set()
    waiter.set()  # a second set is harmless
    with anyio.fail_after(1.0):
        assert await waiter.wait(LONG) is True


@pytest.mark.anyio
async def test_waiter_set_from_another_task(asched: AsyncScheduler) -> None:
    for timeout in (None, LONG):
        waiter = asched.waiter()  # type: ignore[attr-defined]
        got: list[bool] = []

        async def wait_for_it(waiter: Any = waiter, timeout: float | None = timeout) -> None:
            got.append(await waiter.wait(timeout))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_it)
            await asched.sleep(0.01)
            assert got == []
            waiter.set()  # a plain call
        assert got == [True]


@pytest.mark.anyio
async def test_waiter_timeout_returns_false_and_a_late_set_is_harmless(asched: AsyncScheduler) -> None:
    waiter = asched.waiter()  # type: ignore[attr-defined]
    started = time.monotonic()
    assert await waiter.wait(SHORT) is False
    assert time.monotonic() - started >= SHORT * 0.9
    waiter.set()
    await asched.sleep(0.01)


@pytest.mark.anyio
async def test_waiter_cancellation_propagates_and_a_late_set_is_harmless(asched: AsyncScheduler) -> None:
    for timeout in (None, LONG):
        waiter = asched.waiter()  # type: ignore[attr-defined]
        with anyio.move_on_after(0.02) as scope:
            await waiter.wait(timeout)
        assert scope.cancelled_caught
        waiter.set()  # the cancelled task is gone: nothing to reschedule
        await asched.sleep(0.01)


# ------------------------------------------------------------------ queue


@pytest.mark.anyio
async def test_queue_is_fifo(asched: AsyncScheduler) -> None:
    queue = asched.queue()
    assert queue.qsize() == 0
    for item in range(5):
        queue.put(item)
    assert queue.qsize() == 5
    assert [await queue.get(LONG) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert queue.qsize() == 0


@pytest.mark.anyio
async def test_queue_get_timeout_raises_timeout_error(asched: AsyncScheduler) -> None:
    queue = asched.queue()
    with pytest.raises(TimeoutError):
        await queue.get(0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await queue.get(SHORT)
    assert SHORT * 0.8 <= time.monotonic() - started < LONG
    queue.put("late")  # a timed-out getter left nothing behind
    assert await queue.get(LONG) == "late"


@pytest.mark.anyio
async def test_queue_get_waits_for_put_from_other_task(asched: AsyncScheduler) -> None:
    queue = asched.queue()

    async def producer() -> None:
        await asched.sleep(0.01)
        queue.put("a")
        queue.put("b")

    async with asched.task_group() as group:
        group.spawn(producer)
        assert await queue.get(LONG) == "a"
        assert await queue.get() == "b"


@pytest.mark.anyio
async def test_queue_cancelled_getter_loses_no_item(asched: AsyncScheduler) -> None:
    queue = asched.queue()
    received: list[object] = []
    scope = anyio.CancelScope()

    async def getter() -> None:
        with scope:
            received.append(await queue.get(LONG))

    async with asched.task_group() as group:
        group.spawn(getter)
        await asched.sleep(0.01)  # the getter parks
        queue.put(1)  # hands the item over (or wakes the getter) ...
        scope.cancel()  # ... and cancels it before it ran
    leftover = [await queue.get(0)] if queue.qsize() else []
    assert received + leftover == [1]


# ---------------------------------------------------------------- timeout


@pytest.mark.anyio
async def test_timeout_overrun_raises_timeout_error(asched: AsyncScheduler) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asched.timeout(0.02):
            await asched.sleep(LONG)
    assert time.monotonic() - started < LONG


@pytest.mark.anyio
async def test_timeout_is_transparent_otherwise(asched: AsyncScheduler) -> None:
    async with asched.timeout(LONG):
        await asched.sleep(0)
    async with asched.timeout(None):
        await asched.sleep(0.01)
    async with asched.timeout(0.02):
        pass
    await asched.sleep(0.05)  # a finished block never fires later
    with pytest.raises(KeyError):
        async with asched.timeout(LONG):
            raise KeyError("x")


@pytest.mark.anyio
async def test_nested_timeouts_only_convert_their_own(asched: AsyncScheduler) -> None:
    async with asched.timeout(LONG):
        with pytest.raises(TimeoutError):
            async with asched.timeout(0.02):
                await asched.sleep(LONG)
        await asched.sleep(0)
    with pytest.raises(TimeoutError):
        async with asched.timeout(0.02), asched.timeout(LONG):
            await asched.sleep(LONG)


@pytest.mark.anyio
async def test_timeout_does_not_convert_a_foreign_cancellation(asched: AsyncScheduler) -> None:
    with anyio.move_on_after(0.02) as scope:
        async with asched.timeout(LONG):
            await asched.sleep(LONG)
    assert scope.cancelled_caught
    # The same when the foreign scope is cancelled explicitly.
    outer = anyio.CancelScope()
    with outer:
        async with asched.timeout(LONG):
            outer.cancel()
            await asched.sleep(LONG)
    assert outer.cancelled_caught


@pytest.mark.anyio
async def test_timeout_inside_cancelled_task_group_is_not_converted(asched: AsyncScheduler) -> None:
    reached: list[str] = []

    async def child() -> None:
        try:
            async with asched.timeout(LONG):
                await asched.sleep(LONG)
        except TimeoutError:  # pragma: no cover - the bug this test is about
            reached.append("converted")
            raise
        finally:
            reached.append("left")

    async with asched.task_group() as group:
        group.spawn(child)
        await asched.sleep(0.01)
        group.cancel()
    assert reached == ["left"]


# ------------------------------------------------------------------ spawn


@pytest.mark.anyio
async def test_spawn_runs_in_background(asched: AsyncScheduler) -> None:
    event = asched.event()
    results: list[int] = []

    async def job(a: int, b: int) -> None:
        await asched.sleep(0)
        results.append(a + b)
        event.set()

    asched.spawn(job, 2, 3)
    assert await event.wait(LONG)
    assert results == [5]


@pytest.mark.anyio
async def test_spawn_logs_exceptions_instead_of_raising(
    asched: AsyncScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="connpool")
    done = asched.event()

    async def boom() -> None:
        done.set()
        raise ValueError("boom in background")

    asched.spawn(boom)
    assert await done.wait(LONG)
    await wait_until(asched, lambda: bool(error_records(caplog, ValueError)))
    assert len(error_records(caplog, ValueError)) == 1


@pytest.mark.anyio
async def test_task_group_waits_for_children(asched: AsyncScheduler) -> None:
    finished: list[int] = []

    async def child(index: int) -> None:
        await asched.sleep(0.01 * index)
        finished.append(index)

    async with asched.task_group() as group:
        for index in range(3):
            group.spawn(child, index)
    assert sorted(finished) == [0, 1, 2]


@pytest.mark.anyio
async def test_task_group_cancel_stops_children(asched: AsyncScheduler) -> None:
    started = asched.event()
    stopped: list[str] = []

    async def sleeper() -> None:
        try:
            started.set()
            await asched.sleep(3600)
        finally:
            stopped.append("stopped")

    began = time.monotonic()
    async with asched.task_group() as group:
        group.spawn(sleeper)
        group.spawn(sleeper)
        assert await started.wait(LONG)
        group.cancel()
    assert stopped == ["stopped", "stopped"]
    assert time.monotonic() - began < LONG


@pytest.mark.anyio
async def test_task_group_logs_child_errors_without_cancelling_siblings(
    asched: AsyncScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="connpool")
    finished: list[str] = []

    async def boom() -> None:
        raise ValueError("boom in group")

    async def sibling() -> None:
        await asched.sleep(0.02)
        finished.append("sibling")

    async with asched.task_group() as group:
        group.spawn(boom)
        group.spawn(sibling)
    assert finished == ["sibling"]
    assert len(error_records(caplog, ValueError)) == 1


# ------------------------------------------------------------ sleep, lock


@pytest.mark.anyio
async def test_sleep_zero_yields(asched: AsyncScheduler) -> None:
    ran: list[int] = []

    async def child() -> None:
        ran.append(1)

    async with asched.task_group() as group:
        group.spawn(child)
        for _ in range(10):
            await asched.sleep(0)
            if ran:
                break
        assert ran == [1]


@pytest.mark.anyio
async def test_lock_excludes(asched: AsyncScheduler) -> None:
    lock = asched.lock()
    holding = asched.event()
    order: list[str] = []

    async def holder() -> None:
        async with lock:
            holding.set()
            await asched.sleep(0.02)
            order.append("holder")

    async with asched.task_group() as group:
        group.spawn(holder)
        assert await holding.wait(LONG)
        async with lock:
            order.append("other")
    assert order == ["holder", "other"]


# ------------------------------------------------------------------ clock


@pytest.mark.anyio
async def test_monotonic_increases(asched: AsyncScheduler) -> None:
    first = asched.monotonic()
    await asched.sleep(0.01)
    second = asched.monotonic()
    assert second > first
    assert second - first >= 0.005


# --------------------------------------- objects made outside any loop


def _run_twice_with_objects_made_outside(
    run: Callable[[Callable[[], Coroutine[Any, Any, None]]], Any], name: str
) -> None:
    sched = get_backend(name)
    assert isinstance(sched, AsyncScheduler)
    event = sched.event()  # made outside any loop
    queue = sched.queue()
    lock = sched.lock()

    async def main() -> None:
        async with sched.task_group() as group:

            async def setter() -> None:
                await sched.sleep(0.01)
                queue.put("item")
                event.set()

            group.spawn(setter)
            assert await event.wait(LONG)
            assert await queue.get(LONG) == "item"
            async with lock:
                pass
        event.clear()

    run(main)
    run(main)  # a second, different loop: nothing stayed bound to the first


@needs_asyncio
def test_asyncio_objects_made_outside_a_loop_work_in_asyncio_run() -> None:
    _run_twice_with_objects_made_outside(lambda main: asyncio.run(main()), "asyncio")


@needs_trio
def test_trio_objects_made_outside_trio_run_work_inside() -> None:
    import trio

    _run_twice_with_objects_made_outside(trio.run, "trio")


@needs_asyncio
def test_asyncio_spawn_keeps_a_strong_reference() -> None:
    import gc

    sched = get_backend("asyncio")
    finished: list[str] = []

    async def job() -> None:
        await asyncio.sleep(0.01)
        finished.append("done")

    async def main() -> None:
        sched.spawn(job)
        gc.collect()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert finished == ["done"]


@needs_asyncio
def test_asyncio_legacy_timeout_for_python_310() -> None:
    from connpool.backends._asyncio import _LegacyTimeout

    async def overrun() -> None:
        async with _LegacyTimeout(0.02):
            await asyncio.sleep(LONG)

    async def transparent() -> str:
        async with _LegacyTimeout(LONG):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return "ok"

    async def cancelled_from_outside() -> None:
        async def victim() -> None:
            async with _LegacyTimeout(LONG):
                await asyncio.sleep(LONG)

        task = asyncio.ensure_future(victim())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with pytest.raises(TimeoutError):
        asyncio.run(overrun())
    assert asyncio.run(transparent()) == "ok"
    asyncio.run(cancelled_from_outside())


@needs_trio
def test_trio_clock_is_the_scheduler_clock() -> None:
    import trio
    import trio.testing

    sched = get_backend("trio")
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        assert sched.monotonic() == clock.current_time()
        began = sched.monotonic()
        assert await sched.event().wait(3600) is False  # an hour, in no real time
        assert sched.monotonic() - began >= 3600
        with pytest.raises(TimeoutError):
            async with sched.timeout(60):
                await sched.sleep(7200)
        with pytest.raises(TimeoutError):
            await sched.queue().get(600)

    real = time.monotonic()
    trio.run(main, clock=clock)
    assert time.monotonic() - real < LONG


@needs_trio
def test_trio_bound_clock_reads_the_runs_clock() -> None:
    import trio
    import trio.testing

    from connpool.backends._trio import TrioScheduler

    sched = get_backend("trio")
    clock = trio.testing.MockClock()

    async def main() -> None:
        read = sched.clock()  # type: ignore[attr-defined]
        assert read() == sched.monotonic() == clock.current_time()
        clock.jump(1234.5)
        assert read() == sched.monotonic() == clock.current_time()

    trio.run(main, clock=clock)

    class Shifted(TrioScheduler):
        def monotonic(self) -> float:
            return super().monotonic() + 1000.0

    shifted = Shifted()

    async def overridden() -> None:
        assert shifted.clock()() - clock.current_time() == 1000.0  # its own monotonic, not the run's

    trio.run(overridden, clock=clock)
