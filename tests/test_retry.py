"""``connpool.retry`` on every backend.

Sync tests take ``sched`` (threading, gevent, eventlet); async tests are
``@pytest.mark.anyio`` and take ``asched`` (asyncio, trio).  Pauses are
observed through ``sleep=`` where only their lengths matter; where the point
is that the *runtime's* sleep is used, the real sleep runs, with short delays
and events rather than timing guesses.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from connpool._retry import _async_sleep, _sync_sleep, retry, sync_runtime
from connpool.backends import AsyncScheduler, SyncScheduler

LONG = 5.0
GREEN = ("gevent", "eventlet")


class Flaky:
    """A callable failing with ``errors`` (one per call, in order) and then returning ``value``."""

    def __init__(self, *errors: BaseException, value: object = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0
        self.raised: list[BaseException] = []

    def __call__(self, *args: Any, **kwargs: Any) -> object:
        self.calls += 1
        if self.errors:
            error = self.errors.pop(0)
            self.raised.append(error)
            raise error
        return self.value


class AsyncFlaky(Flaky):
    async def run(self, *args: Any, **kwargs: Any) -> object:
        return self(*args, **kwargs)


def failing(n: int, kind: type[Exception] = ConnectionError) -> list[BaseException]:
    return [kind(f"failure {i}") for i in range(1, n + 1)]


def require_green(sched: SyncScheduler) -> None:
    if sched.name not in GREEN:
        pytest.skip("only meaningful on green runtimes")


def native_timeout(sched: SyncScheduler, seconds: float) -> Any:
    """The green runtime's own timeout (a BaseException), as a context manager."""
    if sched.name == "gevent":
        import gevent

        return gevent.Timeout(seconds)
    import eventlet

    return eventlet.Timeout(seconds)


def native_timeout_class(sched: SyncScheduler) -> type[BaseException]:
    if sched.name == "gevent":
        import gevent

        return gevent.Timeout  # type: ignore[no-any-return]
    import eventlet

    return eventlet.Timeout  # type: ignore[no-any-return]


# ============================================================== sync


def test_retries_then_succeeds(sched: SyncScheduler) -> None:
    flaky = Flaky(*failing(2), value=42)
    pauses: list[float] = []
    fn = retry(attempts=3, delay=0.01, jitter=False, sleep=pauses.append)(flaky)
    assert fn("arg", key=1) == 42
    assert flaky.calls == 3
    assert pauses == [0.01, 0.02]


def test_gives_up_reraising_the_last_error_unchanged(sched: SyncScheduler) -> None:
    flaky = Flaky(*failing(5))
    fn = retry(attempts=3, delay=0)(flaky)
    with pytest.raises(ConnectionError) as info:
        fn()
    assert flaky.calls == 3
    assert info.value is flaky.raised[-1]
    assert str(info.value) == "failure 3"
    # Not chained to the earlier failures, and its traceback reaches the failing code.
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    assert info.traceback[-1].name == "__call__"


def test_one_attempt_means_no_retry(sched: SyncScheduler) -> None:
    flaky = Flaky(*failing(1))
    with pytest.raises(ConnectionError):
        retry(attempts=1)(flaky)()
    assert flaky.calls == 1


def test_non_matching_exception_is_not_retried(sched: SyncScheduler) -> None:
    flaky = Flaky(ValueError("bad input"), value="never")
    fn = retry(exceptions=(OSError,), delay=0)(flaky)
    with pytest.raises(ValueError, match="bad input"):
        fn()
    assert flaky.calls == 1


def test_exception_subclasses_and_tuples_match(sched: SyncScheduler) -> None:
    class AppError(Exception):
        pass

    flaky = Flaky(ConnectionResetError("reset"), AppError("app"), value="ok")
    assert retry(exceptions=(OSError, AppError), attempts=3, delay=0)(flaky)() == "ok"
    assert flaky.calls == 3


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
def test_base_exceptions_are_never_retried(sched: SyncScheduler, error: BaseException) -> None:
    flaky = Flaky(error)
    fn = retry(attempts=5, delay=0, exceptions=(Exception,))(flaky)
    with pytest.raises(type(error)) as info:
        fn()
    assert info.value is error
    assert flaky.calls == 1


def test_green_timeout_inside_the_function_is_not_retried(sched: SyncScheduler) -> None:
    require_green(sched)
    timeout_class = native_timeout_class(sched)
    calls = 0

    @retry(attempts=5, delay=0, exceptions=(Exception,))
    def slow() -> None:
        nonlocal calls
        calls += 1
        sched.sleep(LONG)

    with pytest.raises(BaseException) as info, native_timeout(sched, 0.02):
        slow()
    assert isinstance(info.value, timeout_class)
    assert calls == 1


def test_green_timeout_during_the_pause_ends_the_retrying(sched: SyncScheduler) -> None:
    # The runtime's own sleep is used for the pause: a green timeout interrupts it.
    require_green(sched)
    timeout_class = native_timeout_class(sched)
    flaky = Flaky(*failing(5))
    fn = retry(attempts=5, delay=LONG, jitter=False)(flaky)
    started = time.monotonic()
    with pytest.raises(BaseException) as info, native_timeout(sched, 0.02):
        fn()
    assert isinstance(info.value, timeout_class)
    assert flaky.calls == 1
    assert time.monotonic() - started < LONG / 2


def test_delays_grow_with_backoff_and_are_capped(sched: SyncScheduler) -> None:
    flaky = Flaky(*failing(10))
    pauses: list[float] = []
    fn = retry(attempts=7, delay=0.1, backoff=2.0, max_delay=0.5, jitter=False, sleep=pauses.append)(flaky)
    with pytest.raises(ConnectionError):
        fn()
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_backoff_one_keeps_the_delay_constant(sched: SyncScheduler) -> None:
    pauses: list[float] = []
    fn = retry(attempts=4, delay=0.25, backoff=1, jitter=False, sleep=pauses.append)(Flaky(*failing(4)))
    with pytest.raises(ConnectionError):
        fn()
    assert pauses == [0.25, 0.25, 0.25]


def test_huge_backoff_does_not_overflow(sched: SyncScheduler) -> None:
    pauses: list[float] = []
    fn = retry(attempts=40, delay=1, backoff=1e300, max_delay=3, jitter=False, sleep=pauses.append)
    with pytest.raises(ConnectionError):
        fn(Flaky(*failing(40)))()
    assert pauses[0] == 1 and set(pauses[1:]) == {3}


def test_pause_lets_another_task_run(sched: SyncScheduler) -> None:
    """The pause is the runtime's sleep: under gevent/eventlet it yields to the other greenlets."""
    failed_once = sched.event()
    other_ran = sched.event()
    finished = sched.event()
    outcome: list[object] = []
    calls = 0

    @retry(attempts=2, delay=0.05, jitter=False)
    def op() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            failed_once.set()
            raise ConnectionError("first")
        return other_ran.is_set()

    def retrying_task() -> None:
        outcome.append(op())
        finished.set()

    def other_task() -> None:
        if failed_once.wait(LONG):
            other_ran.set()

    sched.spawn(other_task)
    sched.spawn(retrying_task)
    assert finished.wait(LONG)
    # If the pause blocked the hub (time.sleep in an unpatched green process), the other
    # task could only run after op's second call.
    assert outcome == [True]


def test_pause_in_the_main_greenlet_lets_greenlets_run(sched: SyncScheduler) -> None:
    require_green(sched)
    ran = sched.event()
    sched.spawn(ran.set)  # creates the hub; runs only when the main greenlet yields
    flaky = Flaky(ConnectionError("first"), value="second")
    seen: list[bool] = []

    def check(*args: Any) -> object:
        seen.append(ran.is_set())
        return flaky()

    assert retry(attempts=2, delay=0.05, jitter=False)(check)() == "second"
    assert seen == [False, True]


def test_sync_runtime_detection(sched: SyncScheduler) -> None:
    found: list[tuple[str, object]] = []
    done = sched.event()

    def probe() -> None:
        found.append((sync_runtime(), _sync_sleep()))
        done.set()

    sched.spawn(probe)
    assert done.wait(LONG)
    runtime, sleep = found[0]
    assert runtime == sched.name
    if sched.name == "threading":
        assert sleep is time.sleep
    else:
        module = pytest.importorskip(sched.name)
        assert sleep is module.sleep


def test_logging(sched: SyncScheduler, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("tests.retry")
    caplog.set_level(logging.DEBUG, logger="tests.retry")

    def fetch_data() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    fn = retry(attempts=3, delay=0.001, backoff=2, jitter=False, logger=log)(fetch_data)
    with pytest.raises(ConnectionRefusedError):
        fn()
    records = [r for r in caplog.records if r.name == "tests.retry"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING, logging.ERROR]
    messages = [r.getMessage() for r in records]
    for n, message in enumerate(messages, 1):
        assert "test_logging.<locals>.fetch_data" in message
        assert f"attempt {n}/3" in message
        assert "ConnectionRefusedError: [Errno 111] Connection refused" in message
    assert "retrying in 0.001s" in messages[0]
    assert "retrying in 0.002s" in messages[1]
    assert "giving up" in messages[2]


def test_nothing_is_logged_on_success_or_without_logger(
    sched: SyncScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert retry(delay=0, logger=logging.getLogger("tests.retry"))(Flaky())() == "ok"
    with pytest.raises(ConnectionError):
        retry(delay=0, attempts=2)(Flaky(*failing(2)))()
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_on_retry_hook(sched: SyncScheduler) -> None:
    errors = failing(2)
    seen: list[tuple[int, BaseException]] = []
    fn = retry(attempts=3, delay=0, on_retry=lambda n, e: seen.append((n, e)))(Flaky(*errors))
    assert fn() == "ok"
    assert seen == [(1, errors[0]), (2, errors[1])]


def test_on_retry_error_propagates(sched: SyncScheduler) -> None:
    def hook(attempt: int, error: Exception) -> None:
        raise RuntimeError("stop")

    flaky = Flaky(*failing(2))
    with pytest.raises(RuntimeError, match="stop") as info:
        retry(attempts=3, delay=0, on_retry=hook)(flaky)()
    assert flaky.calls == 1
    assert info.value.__context__ is flaky.raised[0]


def test_bare_decorator_uses_defaults(sched: SyncScheduler) -> None:
    flaky = Flaky(ConnectionResetError("once"), value="fine")

    @retry
    def op() -> object:
        return flaky()

    assert op() == "fine"
    assert flaky.calls == 2
    with pytest.raises(ValueError):
        retry(Flaky(ValueError("not an OSError")))()


# ============================================================== async


@pytest.mark.anyio
async def test_async_retries_then_succeeds(asched: AsyncScheduler) -> None:
    flaky = AsyncFlaky(*failing(2), value=7)
    pauses: list[float] = []
    fn = retry(attempts=3, delay=0.01, jitter=False, sleep=pauses.append)(flaky.run)
    assert await fn(1, b=2) == 7
    assert flaky.calls == 3
    assert pauses == [0.01, 0.02]


@pytest.mark.anyio
async def test_async_real_sleep_and_async_sleep_override(asched: AsyncScheduler) -> None:
    flaky = AsyncFlaky(*failing(1), value="a")
    assert await retry(attempts=2, delay=0.001)(flaky.run)() == "a"

    pauses: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asched.sleep(0)

    flaky = AsyncFlaky(*failing(2), value="b")
    assert await retry(attempts=3, delay=1, jitter=False, sleep=fake_sleep)(flaky.run)() == "b"
    assert pauses == [1, 2]


@pytest.mark.anyio
async def test_async_gives_up_reraising_the_last_error(asched: AsyncScheduler) -> None:
    flaky = AsyncFlaky(*failing(4))
    fn = retry(attempts=4, delay=0)(flaky.run)
    with pytest.raises(ConnectionError) as info:
        await fn()
    assert flaky.calls == 4
    assert info.value is flaky.raised[-1]
    assert info.value.__context__ is None


@pytest.mark.anyio
async def test_async_non_matching_exception_is_not_retried(asched: AsyncScheduler) -> None:
    flaky = AsyncFlaky(KeyError("k"))
    with pytest.raises(KeyError):
        await retry(attempts=5, delay=0)(flaky.run)()
    assert flaky.calls == 1


@pytest.mark.anyio
async def test_async_cancellation_inside_the_function_is_not_retried(asched: AsyncScheduler) -> None:
    import anyio

    calls = 0

    @retry(attempts=5, delay=0, exceptions=(Exception,))
    async def slow() -> None:
        nonlocal calls
        calls += 1
        await asched.sleep(LONG)

    with anyio.move_on_after(0.02) as scope:
        await slow()
    assert scope.cancelled_caught
    assert calls == 1


@pytest.mark.anyio
async def test_async_cancellation_during_the_pause_ends_the_retrying(asched: AsyncScheduler) -> None:
    import anyio

    flaky = AsyncFlaky(*failing(5))
    started = time.monotonic()
    with anyio.move_on_after(0.02) as scope:
        await retry(attempts=5, delay=LONG, jitter=False)(flaky.run)()
    assert scope.cancelled_caught
    assert flaky.calls == 1
    assert time.monotonic() - started < LONG / 2


@pytest.mark.anyio
async def test_async_pause_lets_other_tasks_run(asched: AsyncScheduler) -> None:
    import anyio

    other_ran = asched.event()
    calls = 0

    @retry(attempts=2, delay=0.05, jitter=False)
    async def op() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first")
        return other_ran.is_set()

    async def other() -> None:
        other_ran.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        assert await op() is True


@pytest.mark.anyio
async def test_async_sleep_is_the_running_library_sleep(anyio_backend: str) -> None:
    module = pytest.importorskip(anyio_backend)
    assert _async_sleep() is module.sleep


@pytest.mark.anyio
async def test_async_delays_and_logging(asched: AsyncScheduler, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tests.retry")
    pauses: list[float] = []
    fn = retry(
        attempts=5,
        delay=0.5,
        backoff=3,
        max_delay=2,
        jitter=False,
        sleep=pauses.append,
        logger=logging.getLogger("tests.retry"),
    )(AsyncFlaky(*failing(5)).run)
    with pytest.raises(ConnectionError):
        await fn()
    assert pauses == [0.5, 1.5, 2, 2]
    records = [r for r in caplog.records if r.name == "tests.retry"]
    assert [r.levelno for r in records] == [logging.WARNING] * 4 + [logging.ERROR]
    assert "AsyncFlaky.run" in records[0].getMessage()
    assert "attempt 5/5" in records[-1].getMessage()


@pytest.mark.anyio
async def test_async_on_retry_may_be_a_coroutine_function(asched: AsyncScheduler) -> None:
    seen: list[int] = []

    async def hook(attempt: int, error: Exception) -> None:
        await asched.sleep(0)
        seen.append(attempt)

    assert await retry(attempts=3, delay=0, on_retry=hook)(AsyncFlaky(*failing(2)).run)() == "ok"
    assert seen == [1, 2]


@pytest.mark.anyio
async def test_async_callable_object_is_detected(asched: AsyncScheduler) -> None:
    class Op:
        def __init__(self) -> None:
            self.flaky = AsyncFlaky(*failing(1), value="obj")

        async def __call__(self) -> object:
            return self.flaky()

    op = Op()
    wrapped = retry(delay=0)(op)
    assert inspect.iscoroutinefunction(wrapped)
    assert await wrapped() == "obj"
    assert op.flaky.calls == 2


# ============================================================== shape and validation


def test_wraps_keeps_name_doc_signature_and_kind() -> None:
    def send(data: bytes, *, flush: bool = True) -> int:
        """Send data."""
        return len(data)

    async def asend(data: bytes) -> int:
        """Send data, async."""
        return len(data)

    for original in (send, asend):
        for wrapped in (retry(original), retry(attempts=2)(original)):
            assert wrapped.__name__ == original.__name__
            assert wrapped.__qualname__ == original.__qualname__
            assert wrapped.__doc__ == original.__doc__
            assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
            assert inspect.signature(wrapped) == inspect.signature(original)
            assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(original)


def test_methods() -> None:
    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @retry(delay=0)
        def send(self, data: bytes) -> int:
            self.calls += 1
            if self.calls == 1:
                raise BrokenPipeError("first")
            return len(data)

    client = Client()
    assert client.send(b"abc") == 3
    assert client.calls == 2


def test_jitter_ranges() -> None:
    def pauses(jitter: Any) -> list[float]:
        got: list[float] = []
        fn = retry(attempts=4, delay=1, backoff=2, max_delay=3, jitter=jitter, sleep=got.append)
        for _ in range(50):
            with pytest.raises(OSError):
                fn(Flaky(*failing(4)))()
        return got

    bases = [1, 2, 3] * 50
    equal = pauses(True)
    assert all(b / 2 <= p <= b for p, b in zip(equal, bases))
    assert len(set(equal)) > 1
    assert pauses("equal") != equal  # random, but drawn from the same range
    full = pauses("full")
    assert all(0 <= p <= b for p, b in zip(full, bases))
    assert any(p < b / 2 for p, b in zip(full, bases))
    assert pauses(False) == bases


def test_generator_functions_are_refused() -> None:
    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="generator"):
            retry(fn)


def test_positional_option_is_refused() -> None:
    with pytest.raises(TypeError, match=r"retry\(attempts=") as info:
        retry(3)  # type: ignore[call-overload]
    assert "3" in str(info.value)


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": -2}, ValueError, "attempts"),
        ({"attempts": 1.5}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"attempts": "3"}, TypeError, "attempts"),
        ({"delay": -0.1}, ValueError, "delay"),
        ({"delay": float("nan")}, ValueError, "delay"),
        ({"delay": float("inf")}, ValueError, "delay"),
        ({"delay": "1"}, TypeError, "delay"),
        ({"delay": None}, TypeError, "delay"),
        ({"backoff": 0.5}, ValueError, "backoff"),
        ({"backoff": False}, TypeError, "backoff"),
        ({"max_delay": -1}, ValueError, "max_delay"),
        ({"exceptions": ()}, ValueError, "exceptions"),
        ({"exceptions": OSError("x")}, TypeError, "exceptions"),
        ({"exceptions": [OSError]}, TypeError, "exceptions"),
        ({"exceptions": (OSError, int)}, TypeError, "exceptions"),
        ({"exceptions": KeyboardInterrupt}, TypeError, "exceptions"),
        ({"exceptions": BaseException}, TypeError, "exceptions"),
        ({"jitter": "half"}, ValueError, "jitter"),
        ({"jitter": 1}, ValueError, "jitter"),
        ({"logger": "tests.retry"}, TypeError, "logger"),
        ({"on_retry": 3}, TypeError, "on_retry"),
        ({"sleep": 0.1}, TypeError, "sleep"),
    ],
)
def test_validation_at_decoration_time(options: dict[str, Any], error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=rf"\b{names}\b"):
        retry(**options)
    with pytest.raises(error, match=rf"\b{names}\b"):
        retry(lambda: None, **options)


def test_valid_edge_values() -> None:
    fn: Callable[[], object] = retry(attempts=1, delay=0, backoff=1, max_delay=0, jitter=False)(Flaky())
    assert fn() == "ok"
    pauses: list[float] = []
    fn = retry(exceptions=ConnectionError, delay=0, max_delay=0, sleep=pauses.append)(Flaky(*failing(2)))
    assert fn() == "ok"
    assert pauses == [0.0, 0.0]
