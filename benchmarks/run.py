"""connpool's benchmark suite: connpool side by side with the pools users would pick instead,
each on the runtime it serves, in one run.

    python benchmarks/run.py [--runtime threading|gevent|eventlet|asyncio|trio|all]
                             [--duration SECONDS] [--warmup SECONDS] [--quick] [--json FILE]
                             [--workload uncontended|contended|io ...] [--only SUBSTRING ...]
                             [--repeat N] [--strict]

Every runtime is measured in its own process (``child.py``; gevent and eventlet ones are
monkey-patched before anything else is imported), which writes JSON records that this
process collects and prints: one table per runtime and workload.

Line-up (see ``pools_<runtime>.py``):

* threading: connpool, minimal fair pool, psycopg_pool (stand-in connections), SQLAlchemy
  QueuePool, ProxyPatternPool, generic-connection-pool, deque floor;
* gevent: connpool, minimal fair pool, gevent.queue.Queue pool, and psycopg_pool, SQLAlchemy
  QueuePool, ProxyPatternPool and generic-connection-pool under monkey-patching, floor;
* eventlet: connpool, minimal fair pool, eventlet.pools.Pool, and the same four pools under
  monkey-patching, floor;
* asyncio: connpool, minimal fair pool, asyncio-connection-pool, psycopg_pool
  AsyncConnectionPool (stand-in connections), generic-connection-pool (asyncio), floor;
* trio: connpool, minimal fair pool, trio memory-channel pool, floor.

Workloads (pool ``max_size`` = 10 everywhere):

* ``uncontended``: one worker, acquire+release back to back: ops/s.
* ``contended``: 200 tasks/greenlets (16 OS threads on threading), each cycle = acquire,
  yield once, release; ops/s, acquire wait p50/p99/max and Jain's fairness index over the
  workers' cycle counts ((sum x)^2 / (n * sum x^2); 1 = even, 1/n = one worker did all).
* ``io``: the same, but each cycle makes one 32-byte round trip to an in-process echo
  server over a real TCP connection the pool opened.

Reference points: the *minimal fair pool* (an idle deque plus a FIFO of waiters with direct
hand-off and nothing else, written in the suite for each runtime) is the cost of fairness
without features; the *floor* is a bare deque holding one connection per worker, so nobody
ever waits: the cost of the workload loop itself (on ``io``: a dedicated connection per
worker, no pool). Ratios: ``x best other`` = ops/s over the fastest pool a user would pick
instead (libraries and recipes, not the references; for the other pools connpool counts
among them); ``x minimal`` and ``x floor`` likewise against the two references. When
connpool ran, a second table gives each of its figures as a ratio to every other entry.

Measurements of one line-up run one after the other, not at the same time, so a machine
busy with something else skews the ratios: the header prints the load average around each
runtime, and ``--repeat N`` runs N interleaved rounds and keeps each pool's best. With two
rounds or more, connpool's ratio table also pairs the rounds (connpool's round ``i`` over
the other pool's round ``i``, measured moments apart) and prints the median of those ratios
and their range: on a noisy machine a steadier estimate of the ratio than best over best.

The floor is not an upper bound on ``io``: there every worker keeps a connection busy (200
in flight instead of 10), which can cost the event loop or the echo server more than the
pools' ten.

A pool that fails or is not installed is reported as such in its row; the run goes on. The
exit status is 1 when a runtime's process failed (e.g. its library is not installed) and,
with ``--strict``, when a connpool entry failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNTIMES = ["threading", "gevent", "eventlet", "asyncio", "trio"]
WORKLOADS = ["uncontended", "contended", "io"]
OTHER_KINDS = ("subject", "library", "recipe")  # what a user would actually pick
QUICK = {"duration": 0.2, "warmup": 0.05}

WORKLOAD_TITLES = {
    "uncontended": "uncontended: 1 worker, acquire+release",
    "contended": "contended: {workers} {unit}, pool of 10, yield once per cycle",
    "io": "io: {workers} {unit}, pool of 10, one TCP echo round trip per cycle",
}
UNITS = {
    "threading": "threads",
    "gevent": "greenlets",
    "eventlet": "green threads",
    "asyncio": "tasks",
    "trio": "tasks",
}


# --------------------------------------------------------------------------- running


def run_child(runtime: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Run one runtime's process; return its payload, or a stub naming the failure."""
    out = Path(workdir) / f"{runtime}.json"
    cmd = [
        sys.executable,
        str(HERE / "child.py"),
        runtime,
        "--json-out",
        str(out),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    for workload in args.workload or []:
        cmd += ["--workload", workload]
    for part in args.only:
        cmd += ["--only", part]
    cmd += ["--repeat", str(args.repeat)]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=HERE, timeout=args.runtime_timeout, check=False)
        code: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        code = f"timed out after {args.runtime_timeout:.0f}s"
    if code == 0 and out.exists():
        payload: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        payload["seconds"] = time.monotonic() - started
        return payload
    error = f"runtime process failed ({code}); its stderr is above"
    return {"runtime": runtime, "error": error, "results": [], "versions": {}}


# --------------------------------------------------------------------------- report


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0 and abs(value) < 10:
        return f"{value:.1f}"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"


def _best(
    rows: list[dict[str, Any]], kinds: tuple[str, ...], exclude: dict[str, Any]
) -> dict[str, Any] | None:
    candidates = [r for r in rows if r["kind"] in kinds and r is not exclude and r["ops_per_s"]]
    return max(candidates, key=lambda r: r["ops_per_s"], default=None)


def paired_ratios(subject: dict[str, Any], other: dict[str, Any]) -> list[float]:
    """``subject``'s ops/s over ``other``'s, round by round, for the rounds both completed.

    Round ``i`` of every pool of a line-up runs before round ``i + 1`` of any, so the two
    figures of a pair were measured moments apart: a pair shares the state of the machine
    at that moment that two best-of-N figures, possibly from different rounds, do not.
    """
    return [a / b for a, b in zip(subject.get("round_ops") or [], other.get("round_ops") or []) if a and b]


def _spread(ratios: list[float]) -> str:
    """``median (min-max)`` of per-round ratios; ``-`` with fewer than two rounds."""
    if len(ratios) < 2:
        return "-"
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _one(rows: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["kind"] == kind and r["ops_per_s"]), None)


def format_table(runtime: str, workers: int | None, workload: str, rows: list[dict[str, Any]]) -> list[str]:
    """The main table of one runtime and workload, plus connpool's ratio table."""
    title = WORKLOAD_TITLES[workload].format(workers=workers or "?", unit=UNITS[runtime])
    lines = [f"== {runtime} | {title}"]
    width = max([36] + [len(r["pool"]) + 4 for r in rows])  # room for the " *" / " !" marks
    head = (
        f"{'pool':<{width}}{'ops/s':>12}{'p50 us':>10}{'p99 us':>10}{'max us':>11}{'fair':>7}"
        f"{'x best other':>14}{'x minimal':>11}{'x floor':>9}"
    )
    lines += [head, "-" * len(head)]
    minimal = _one(rows, "reference")
    floor = _one(rows, "floor")
    notes = []
    for row in rows:
        name = row["pool"] + (" *" if row["note"] else "") + (" !" if row.get("teardown_error") else "")
        if row["note"] and f"* {row['note']}" not in notes:
            notes.append(f"* {row['note']}")
        if row.get("teardown_error"):
            notes.append(f"! {row['pool']}: measured, but closing the pool failed: {row['teardown_error']}")
        if row["error"]:
            lines.append(f"{name:<{width}}  {row['error']}")
            continue
        best = _best(rows, OTHER_KINDS, exclude=row)
        fair = "-" if row["fairness"] is None else f"{row['fairness']:.3f}"
        lines.append(
            f"{name:<{width}}{_num(row['ops_per_s']):>12}{_num(row['wait_p50_us']):>10}{_num(row['wait_p99_us']):>10}"
            f"{_num(row['wait_max_us']):>11}{fair:>7}"
            f"{_ratio(row['ops_per_s'], best and best['ops_per_s']):>14}"
            f"{_ratio(row['ops_per_s'], minimal and minimal['ops_per_s']):>11}"
            f"{_ratio(row['ops_per_s'], floor and floor['ops_per_s']):>9}"
        )
    lines += [f"  {note}" for note in notes]
    subject = _one(rows, "subject")
    if subject is not None:
        lines.append(
            "  connpool relative to each (ops/s: >1 = connpool faster; waits: <1 = connpool waits less)"
        )
        lines.append(
            f"  {'vs':<{width - 2}}{'ops/s':>9}{'p50':>9}{'p99':>9}{'max':>9}{'fair':>9}"
            f"  {'ops/s per round: median (range)'}"
        )
        for row in rows:
            if row is subject or row["error"]:
                continue
            waits = ["-"] * 3  # the floor never waits: wait ratios against it mean nothing
            if row["kind"] != "floor":
                waits = [
                    _ratio(subject[key], row[key]) for key in ("wait_p50_us", "wait_p99_us", "wait_max_us")
                ]
            lines.append(
                f"  {row['pool']:<{width - 2}}{_ratio(subject['ops_per_s'], row['ops_per_s']):>9}"
                + "".join(f"{w:>9}" for w in waits)
                + f"{_ratio(subject['fairness'], row['fairness']):>9}"
                + f"  {_spread(paired_ratios(subject, row))}"
            )
    return lines


def report(payloads: list[dict[str, Any]], command: str, args: argparse.Namespace) -> str:
    versions: dict[str, str] = {}
    connpool_from = {p.get("connpool_from") for p in payloads if p.get("connpool_from")}
    for payload in payloads:
        versions.update(payload.get("versions", {}))
    lines = [
        f"command:  {command}",
        f"python:   {versions.pop('python', platform.python_version())}  ({sys.executable})",
        f"platform: {platform.platform()}, {os.cpu_count()} CPUs",
        f"settings: {args.duration}s per measurement after {args.warmup}s warm-up, best of {args.repeat}",
        "load:     1-min load average before/after each runtime: "
        + ", ".join(
            f"{p['runtime']} {p['load_average'][0]:.1f}/{p['load_average'][1]:.1f}"
            for p in payloads
            if p.get("load_average")
        ),
        "versions: " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())),
        f"connpool: imported from {', '.join(sorted(connpool_from)) or 'nowhere (not importable)'}",
        "",
    ]
    for payload in payloads:
        runtime = payload["runtime"]
        if payload.get("error"):
            lines += [f"== {runtime}: {payload['error']}", ""]
            continue
        for workload in WORKLOADS:
            rows = [r for r in payload["results"] if r["workload"] == workload]
            if rows:
                lines += [*format_table(runtime, payload.get("workers"), workload, rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime", choices=[*RUNTIMES, "all"], default="all")
    parser.add_argument("--duration", type=float, default=1.5, help="seconds measured per pool and workload")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds of warm-up per measurement")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: {duration}s + {warmup}s".format(**QUICK)
    )
    parser.add_argument("--json", metavar="FILE", help="also write every record and the versions as JSON")
    parser.add_argument("--workload", action="append", choices=WORKLOADS, help="repeatable; default: all")
    parser.add_argument("--only", action="append", default=[], help="only pools whose name contains this")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over each line-up, interleaved; each pool keeps its best",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 also when a connpool entry failed")
    parser.add_argument("--runtime-timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = QUICK["duration"], QUICK["warmup"]
    command = shlex.join([sys.executable, *sys.argv])
    runtimes = RUNTIMES if args.runtime == "all" else [args.runtime]
    with tempfile.TemporaryDirectory(prefix="connpool-bench-") as workdir:
        payloads = [run_child(runtime, args, workdir) for runtime in runtimes]
    text = report(payloads, command, args)
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"command": command, "settings": vars(args), "runtimes": payloads}, indent=1),
            encoding="utf-8",
        )
    failed = [p["runtime"] for p in payloads if p.get("error")]
    if args.strict:
        failed += [
            f"{r['runtime']}/{r['workload']}"
            for p in payloads
            for r in p["results"]
            if r["kind"] == "subject" and (r["error"] or r.get("teardown_error"))
        ]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
