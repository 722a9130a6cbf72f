"""One backend's benchmark process.

The parent starts ``python -c BOOT BACKEND SPEC``: :data:`BOOT` monkey-patches
first when the backend is gevent or eventlet (nothing else is imported
before, which is how their users run), then calls :func:`child_main`.  That
runs the workload once per pool size in ``SPEC`` (JSON) and prints one line
``RESULT_MARK {json}`` on stdout: ``{"runs": [...]}`` or ``{"error": "..."}``.

A run: a pool of ``size`` connections, filled before the clock starts;
``workers`` threads, greenlets or tasks released together; each loops
acquire (``pool.connection()``), one cycle (send the payload and read the
echo, ``PING``, ``SELECT 1``), release, until the time is up.  Each worker
records the time every acquire waited and every connection was held.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ._stats import summarize
from ._targets import Target, async_workload, one_line, sync_workload

__all__ = ["BOOT", "RESULT_MARK", "child_main"]

RESULT_MARK = "@@connpool-bench-result@@"

#: how long past the end of the run an acquire may still wait (then it fails, and counts as an error)
_SLACK = 2.0

#: The program of a child process (``python -c BOOT BACKEND SPEC``).
BOOT = """\
import sys
if sys.argv[1] == "gevent":
    from gevent import monkey
    monkey.patch_all()
elif sys.argv[1] == "eventlet":
    import warnings
    warnings.filterwarnings("ignore", message=r"\\s*Eventlet is deprecated")
    import eventlet
    eventlet.monkey_patch()
from connpool._cli._child import child_main
sys.exit(child_main(sys.argv[1:]))
"""


@dataclass
class _Tally:
    """What the workers of one run recorded."""

    workers: int
    counts: list[int] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    uses: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def __post_init__(self) -> None:
        self.counts = [0] * self.workers

    def add(self, index: int, waits: list[float], uses: list[float]) -> None:
        self.counts[index] = len(waits)
        self.waits.extend(waits)
        self.uses.extend(uses)
        self.latencies.extend(w + u for w, u in zip(waits, uses, strict=True))

    def error(self, exc: Exception) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {one_line(exc)}"

    def summary(self, backend: str, size: int, elapsed: float, stats: dict[str, Any]) -> dict[str, Any]:
        return summarize(
            backend=backend,
            size=size,
            workers=self.workers,
            elapsed=elapsed,
            counts=self.counts,
            waits=self.waits,
            uses=self.uses,
            latencies=self.latencies,
            errors=self.errors,
            first_error=self.first_error,
            stats=stats,
        )


def child_main(argv: list[str]) -> int:
    """Run the benchmark described by ``argv = [backend, spec_json]``; print the result line."""
    backend, spec_text = argv
    spec = json.loads(spec_text)
    target = Target(**spec["target"])
    runs: list[dict[str, Any]] = []
    try:
        for size in spec["sizes"]:
            if backend in ("asyncio", "trio"):
                runs.append(_run_async_backend(backend, target, size, spec))
            else:
                runs.append(_run_sync(backend, target, size, spec))
    except Exception as exc:
        _emit({"error": one_line(exc)})
        return 1
    _emit({"runs": runs})
    return 0


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(f"{RESULT_MARK} {json.dumps(result)}\n")
    sys.stdout.flush()


def _pool_options(backend: str, size: int, spec: dict[str, Any]) -> dict[str, Any]:
    connect_timeout = float(spec["connect_timeout"])
    return {
        "backend": backend,
        "min_size": size,
        "max_size": size,
        "connect_timeout": connect_timeout,
        "name": f"bench-{backend}",
    }


# ------------------------------------------------------------------- sync


def _run_sync(backend: str, target: Target, size: int, spec: dict[str, Any]) -> dict[str, Any]:
    from .. import Pool
    from ..backends import SyncScheduler, get_backend

    sched = get_backend(backend)
    assert isinstance(sched, SyncScheduler)
    connect_timeout = float(spec["connect_timeout"])
    workload = sync_workload(target, backend, b"x" * int(spec["payload"]), connect_timeout)
    workers = int(spec["workers"])
    duration = float(spec["duration"])
    tally = _Tally(workers)
    go = sched.event()
    deadline = [0.0]
    pool: Pool[Any] = Pool(workload.connect, close=workload.close, **_pool_options(backend, size, spec))

    def worker(index: int) -> None:
        go.wait()
        end = deadline[0]
        clock = time.perf_counter
        cycle = workload.cycle
        connection = pool.connection
        waits: list[float] = []
        uses: list[float] = []
        while True:
            t0 = clock()
            if t0 >= end:
                break
            try:
                with connection(end - t0 + _SLACK) as conn:
                    t1 = clock()
                    cycle(conn)
                    t2 = clock()
            except Exception as exc:
                tally.error(exc)
                continue
            waits.append(t1 - t0)
            uses.append(t2 - t1)
        tally.add(index, waits, uses)

    with pool:
        pool.open(wait=True, timeout=connect_timeout + 10.0)
        tasks = [sched.spawn(worker, i) for i in range(workers)]
        started = time.perf_counter()
        deadline[0] = started + duration
        go.set()
        for task in tasks:
            task.join()
        elapsed = time.perf_counter() - started
        settle = time.perf_counter() + 1.0  # returned connections may still be in `reset`
        while pool.stats().in_use and time.perf_counter() < settle:
            sched.sleep(0.005)
        stats = pool.stats().as_dict()
    return tally.summary(backend, size, elapsed, stats)


# ------------------------------------------------------------------ async


def _run_async_backend(backend: str, target: Target, size: int, spec: dict[str, Any]) -> dict[str, Any]:
    if backend == "trio":
        import trio

        return trio.run(_run_async, backend, target, size, spec)
    import asyncio

    return asyncio.run(_run_async(backend, target, size, spec))


async def _run_async(backend: str, target: Target, size: int, spec: dict[str, Any]) -> dict[str, Any]:
    from .. import AsyncPool
    from ..backends import AsyncScheduler, get_backend

    sched = get_backend(backend)
    assert isinstance(sched, AsyncScheduler)
    connect_timeout = float(spec["connect_timeout"])
    workload = async_workload(target, b"x" * int(spec["payload"]), connect_timeout)
    workers = int(spec["workers"])
    duration = float(spec["duration"])
    tally = _Tally(workers)
    go = sched.event()
    deadline = [0.0]
    pool: AsyncPool[Any] = AsyncPool(
        workload.connect, close=workload.close, **_pool_options(backend, size, spec)
    )

    async def worker(index: int) -> None:
        await go.wait()
        end = deadline[0]
        clock = time.perf_counter
        cycle = workload.cycle
        connection = pool.connection
        waits: list[float] = []
        uses: list[float] = []
        while True:
            t0 = clock()
            if t0 >= end:
                break
            try:
                async with connection(end - t0 + _SLACK) as conn:
                    t1 = clock()
                    await cycle(conn)
                    t2 = clock()
            except Exception as exc:
                tally.error(exc)
                continue
            waits.append(t1 - t0)
            uses.append(t2 - t1)
        tally.add(index, waits, uses)

    async with pool:
        await pool.wait(connect_timeout + 10.0)
        async with sched.task_group() as group:
            for i in range(workers):
                group.spawn(worker, i)
            started = time.perf_counter()
            deadline[0] = started + duration
            go.set()
        elapsed = time.perf_counter() - started
        settle = time.perf_counter() + 1.0  # returned connections may still be in `reset`
        while pool.stats().in_use and time.perf_counter() < settle:
            await sched.sleep(0.005)
        stats = pool.stats().as_dict()
    return tally.summary(backend, size, elapsed, stats)
