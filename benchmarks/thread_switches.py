"""Where a contended cycle goes on threading: thread switches and CPU time per cycle.

The suite's threading ``contended`` workload (16 OS threads, a pool of 10, one
``time.sleep(0)`` while holding) is bound by the operating system: a fair pool wakes
a parked thread on every cycle, and every thread that runs must take the GIL.  This
script runs that workload and reads ``getrusage`` around it, for connpool, for the
suite's minimal fair pool, and for the minimal fair pool made to run a little more
Python per cycle (a loop of ``--pad`` additions between being woken and returning the
connection), which shows what one more microsecond of pool work costs there::

    python benchmarks/thread_switches.py                 # 5 interleaved rounds of 1 s
    python benchmarks/thread_switches.py --pad 30 --pad 60 --rounds 3

Columns: cycles per second (median of the rounds), voluntary and involuntary context
switches per cycle, and user and system CPU time per cycle (µs, both cores together).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time
from typing import Any

from bench_common import CONTENDED_THREADS, Conn, Factory, connpool_adapter, minimal_adapter
from pools_threading import MinimalFairPool

POOL_SIZE = 10


def _padded(pad: int) -> type[MinimalFairPool]:
    """The minimal fair pool, running ``pad`` more loop iterations of Python per acquire."""

    class Padded(MinimalFairPool):
        def acquire(self) -> Any:
            conn = super().acquire()
            total = 0
            for i in range(pad):
                total += i
            return conn

    return Padded


def _line_up(pads: list[int]) -> dict[str, Factory]:
    line_up = {
        "connpool Pool(threading)": connpool_adapter("threading"),
        "minimal fair pool": minimal_adapter(MinimalFairPool),
    }
    for pad in pads:
        line_up[f"minimal fair pool + {pad} loop steps"] = minimal_adapter(_padded(pad))
    return line_up


def measure(acquire: Any, release: Any, duration: float) -> tuple[float, float, float, float, float]:
    """(cycles/s, voluntary switches, involuntary switches, user us, system us) per cycle."""
    stop = threading.Event()
    counts = [0] * CONTENDED_THREADS

    def worker(index: int) -> None:
        cycles = 0
        pause = time.sleep
        while not stop.is_set():
            conn = acquire()
            pause(0)
            release(conn)
            cycles += 1
        counts[index] = cycles

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(CONTENDED_THREADS)]
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(duration)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cycles = max(1, sum(counts))
    return (
        cycles / elapsed,
        (after.ru_nvcsw - before.ru_nvcsw) / cycles,
        (after.ru_nivcsw - before.ru_nivcsw) / cycles,
        (after.ru_utime - before.ru_utime) / cycles * 1e6,
        (after.ru_stime - before.ru_stime) / cycles * 1e6,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is shown)")
    parser.add_argument("--pad", type=int, action="append", help="loop steps added (default: 30)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1:
        parser.error("--duration must be > 0 and --rounds at least 1")
    line_up = _line_up(args.pad if args.pad is not None else [30])
    results: dict[str, list[tuple[float, ...]]] = {name: [] for name in line_up}
    for _ in range(args.rounds):
        for name, factory in line_up.items():
            with factory(Conn, POOL_SIZE) as (acquire, release):
                results[name].append(measure(acquire, release, args.duration))
    reference = statistics.median(r[0] for r in results["minimal fair pool"])
    print(f"threading, {CONTENDED_THREADS} threads, pool of {POOL_SIZE}, sleep(0) while holding")
    head = ("cycles/s", "x minimal", "vol cs", "invol cs", "user us", "sys us")
    widths = (10, 9, 7, 8, 8, 7)
    print(f"{'pool':40} " + " ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    for name, rows in results.items():
        ops, vol, invol, user, system = (statistics.median(column) for column in zip(*rows))
        cells = (f"{ops:,.0f}", f"{ops / reference:.2f}x", f"{vol:.2f}", f"{invol:.2f}")
        cells += (f"{user:.1f}", f"{system:.1f}")
        print(f"{name:40} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
