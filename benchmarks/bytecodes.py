"""Python bytecodes executed per acquire+release cycle, by function: a measure that noise cannot move.

Timings on a shared machine swing by 30 % from one run to the next; the number of
bytecodes a cycle executes does not.  This script runs a fixed number of cycles
under ``sys.settrace`` with opcode events and prints, per function, the bytecodes
each cycle executed, for connpool and for the pool it is compared with on that
runtime::

    python benchmarks/bytecodes.py trio contended     # connpool vs a trio memory channel
    python benchmarks/bytecodes.py asyncio uncontended
    python benchmarks/bytecodes.py threading uncontended

``contended`` is the suite's workload (200 tasks, pool of 10, one yield while
holding); ``uncontended`` is one task acquiring and releasing back to back.
Bytecodes are not time (a call costs more than a local load), but a cut in them
is a cut in work, and the split by function shows where a cycle goes.  Code
outside Python (trio's and asyncio's C parts, locks, the clock) is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

TASKS = 200
POOL_SIZE = 10


class _Conn:
    closed = False

    def close(self) -> None:
        self.closed = True


async def _aconnect() -> _Conn:
    return _Conn()


# --------------------------------------------------------------------------- line-ups


async def _async_pools(runtime: str, kind: str) -> tuple[Any, Any, Callable[[], Any], Any]:
    """(acquire, release, yield_once, closer) for ``kind`` on ``runtime``."""
    if runtime == "trio":
        import trio

        yield_once: Callable[[], Any] = trio.lowlevel.checkpoint
    else:

        def yield_once() -> Any:
            return asyncio.sleep(0)

    if kind == "connpool":
        from connpool import AsyncPool

        pool = AsyncPool(_aconnect, backend=runtime, max_size=POOL_SIZE)
        await pool.__aenter__()
        return pool.acquire, pool.release, yield_once, pool
    if runtime == "trio":
        import trio

        send, receive = trio.open_memory_channel[Any](POOL_SIZE)
        for _ in range(POOL_SIZE):
            send.send_nowait(_Conn())
        return receive.receive, send.send_nowait, yield_once, None
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for _ in range(POOL_SIZE):
        queue.put_nowait(_Conn())
    return queue.get, queue.put_nowait, yield_once, None


async def _async_run(runtime: str, kind: str, workload: str, cycles: int) -> None:
    acquire, release, yield_once, pool = await _async_pools(runtime, kind)
    if workload == "uncontended":
        for _ in range(cycles):
            release(await acquire())
    else:
        done = 0

        async def worker() -> None:
            nonlocal done
            while done < cycles:
                conn = await acquire()
                await yield_once()
                release(conn)
                done += 1

        if runtime == "trio":
            import trio

            async with trio.open_nursery() as nursery:
                for _ in range(TASKS):
                    nursery.start_soon(worker)
        else:
            await asyncio.gather(*(worker() for _ in range(TASKS)))
    if pool is not None:
        await pool.__aexit__(None, None, None)


def _threading_run(kind: str, workload: str, cycles: int) -> None:
    if workload != "uncontended":
        raise SystemExit("threading: only the uncontended workload is deterministic enough to count")
    if kind == "connpool":
        from connpool import Pool

        pool = Pool(_Conn, backend="threading", max_size=POOL_SIZE)
        acquire, release = pool.acquire, pool.release
        for _ in range(cycles):
            release(acquire())
        pool.close()
    else:
        import queue

        idle: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        for _ in range(POOL_SIZE):
            idle.put(_Conn())
        for _ in range(cycles):
            idle.put(idle.get())


OTHER = {"threading": "queue.SimpleQueue", "asyncio": "asyncio.Queue", "trio": "trio memory channel"}


# --------------------------------------------------------------------------- counting


def _prime_tracing() -> None:
    """Trace one call with opcode events, then stop: on Python 3.12.1 the first tracing
    session of a process reports no opcode events at all, the following ones do."""

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        return lambda *_: None

    def traced() -> None:
        pass

    sys.settrace(trace)
    try:
        traced()
    finally:
        sys.settrace(None)


def count(runtime: str, kind: str, workload: str, cycles: int) -> collections.Counter[str]:
    """Bytecodes executed while running ``cycles`` cycles, by ``file:function``."""
    counts: collections.Counter[str] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"

        def opcodes(frame: FrameType, event: str, arg: object) -> Any:
            if event == "opcode":
                counts[key] += 1
            return opcodes

        return opcodes

    def run(n: int) -> None:
        if runtime == "threading":
            _threading_run(kind, workload, n)
        elif runtime == "trio":
            import trio

            trio.run(_async_run, runtime, kind, workload, n)
        else:
            asyncio.run(_async_run(runtime, kind, workload, n))

    run(10)  # imports and first-time work stay out of the count
    _prime_tracing()
    threading.settrace(trace)
    sys.settrace(trace)
    try:
        run(cycles)
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runtime", choices=sorted(OTHER))
    parser.add_argument("workload", choices=["uncontended", "contended"])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--top", type=int, default=12, help="functions listed per pool")
    args = parser.parse_args(argv)
    totals = {}
    for kind, label in [("connpool", "connpool"), ("other", OTHER[args.runtime])]:
        counts = count(args.runtime, kind, args.workload, args.cycles)
        total = sum(counts.values()) / args.cycles
        totals[label] = total
        print(f"== {label}: {total:,.0f} bytecodes per cycle ({args.runtime}, {args.workload})")
        for key, n in counts.most_common(args.top):
            print(f"  {n / args.cycles:8.1f}  {key}")
    (a, ta), (b, tb) = totals.items()
    print(f"{a} / {b}: {ta / tb:.2f}x the bytecodes per cycle")


if __name__ == "__main__":
    main()
