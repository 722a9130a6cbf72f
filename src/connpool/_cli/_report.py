"""Turning runs into tables, a size recommendation and a plot."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from typing import Any

from ._errors import USAGE, CLIError

__all__ = [
    "bench_table",
    "check_plot_path",
    "group_by_backend",
    "plot_sweep",
    "recommend",
    "require_matplotlib",
    "stats_lines",
    "sweep_report",
]

#: default p99 allowance when --max-p99 is not given: this many times the best p99
P99_ALLOWANCE = 1.5

_PLOT_HINT = 'pip install "connpool[plot]"'


def _ms(value: float) -> str:
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "", left: Sequence[int] = (0,)
) -> list[str]:
    """Rows under a header; the columns numbered in ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(header), *(line(row) for row in rows)]


def group_by_backend(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped per backend (in the order they ran), each group sorted by pool size."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["backend"], []).append(run)
    for group in groups.values():
        group.sort(key=lambda run: run["size"])
    return groups


# ------------------------------------------------------------------ bench


def bench_table(
    runs: Sequence[dict[str, Any]], failed: dict[str, str], skipped: dict[str, str] | None = None
) -> list[str]:
    """One row per backend: throughput, waits, use and connect times, fairness, errors.

    Backends that ``failed`` or were ``skipped`` get a line with the reason.
    """
    skipped = skipped or {}
    header = [
        "backend",
        "ops/s",
        "wait p50",
        "wait p99",
        "wait max",
        "use p50",
        "connect p50",
        "fairness",
        "errors",
    ]
    rows = [
        [
            run["backend"],
            f"{run['throughput']:,.0f}",
            _ms(run["wait_p50_ms"]),
            _ms(run["wait_p99_ms"]),
            _ms(run["wait_max_ms"]),
            _ms(run["use_p50_ms"]),
            _ms(run["connect_p50_ms"]),
            f"{run['fairness']:.3f}",
            str(run["errors"]),
        ]
        for run in runs
    ]
    lines = _table(header, rows)
    width = max(len(name) for name in ["backend", *(run["backend"] for run in runs), *failed, *skipped])
    lines += [f"{backend:<{width}}  FAILED: {message}" for backend, message in failed.items()]
    lines += [f"{backend:<{width}}  skipped: {reason}" for backend, reason in skipped.items()]
    lines.append("")
    lines += textwrap.wrap(
        "Times in ms.  wait: how long acquire() waited; use: how long a connection was held "
        "(one cycle); connect: opening one (pool.stats()); fairness: Jain's index over the "
        "workers' operation counts (1.000 = all equal).",
        100,
    )
    return lines


def stats_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    """A ``pool.stats()`` summary per run, taken when its workers had finished."""
    if not runs:
        return []
    width = max(len(run["backend"]) for run in runs)
    lines = ["pool.stats() at the end of each run:"]
    for run in runs:
        s = run["stats"]
        lines.append(
            f"  {run['backend']:<{width}}  size {s['size']} (idle {s['idle']}, in use {s['in_use']}), "
            f"acquired {s['acquired']:,}, connects {s['connects']}, connect errors {s['connect_errors']}, "
            f"timeouts {s['timeouts']}, discarded {s['discarded']}, closed {s['closed']}"
        )
        waits = f"{_ms(s['wait_p50'])}/{_ms(s['wait_p99'])}/{_ms(s['wait_max'])}"
        lines.append(
            f"  {'':<{width}}  recent checkouts: wait p50/p99/max {waits} ms, "
            f"use p50/p99 {_ms(s['use_p50'])}/{_ms(s['use_p99'])} ms"
        )
    errors = [run for run in runs if run["errors"]]
    for run in errors:
        lines.append(f"  {run['backend']}: {run['errors']} failed cycle(s), first: {run['first_error']}")
    return lines


# ------------------------------------------------------------------ sizes


def recommend(
    runs: Sequence[dict[str, Any]], fraction: float, max_p99: float | None
) -> dict[str, Any] | None:
    """The pool size to use, from one backend's runs at several sizes, and why.

    The smallest size whose throughput reaches ``fraction`` of the peak and
    whose p99 latency (acquire wait + round trip) stays within ``max_p99`` ms,
    by default :data:`P99_ALLOWANCE` times the best p99 among the sizes that
    reach the throughput bar.  ``None`` when no run completed a cycle.
    """
    rows = sorted((run for run in runs if run["ops"] > 0), key=lambda run: run["size"])
    if not rows:
        return None
    peak_run = max(rows, key=lambda run: run["throughput"])
    peak = peak_run["throughput"]
    fast = [run for run in rows if run["throughput"] >= fraction * peak]
    if max_p99 is None:
        best = min(run["latency_p99_ms"] for run in fast)
        limit = P99_ALLOWANCE * best
        limit_text = f"{_ms(limit)} ms, {P99_ALLOWANCE:g} x the best p99 among them"
    else:
        limit = max_p99
        limit_text = f"{_ms(limit)} ms, --max-p99"
    within = [run for run in fast if run["latency_p99_ms"] <= limit]
    choice = within[0] if within else fast[0]
    reach = (
        f"{choice['throughput']:,.0f} of the peak {peak:,.0f} ops/s at size {peak_run['size']}"
        if choice is not peak_run
        else f"the peak, {peak:,.0f} ops/s"
    )
    if within:
        reason = (
            f"smallest size reaching {fraction:.0%} of peak throughput ({reach}) "
            f"with p99 {_ms(choice['latency_p99_ms'])} ms (limit {limit_text})"
        )
    else:
        reason = (
            f"no size kept p99 under {limit_text}; smallest size reaching {fraction:.0%} of peak "
            f"throughput ({reach}), p99 {_ms(choice['latency_p99_ms'])} ms"
        )
    largest = rows[-1]["size"]
    if choice["size"] == largest and len(rows) > 1:
        reason += "; it is the largest size tried: sweep higher sizes to see whether throughput still grows"
    elif choice["size"] < largest:
        reason += "; larger pools add connections, not throughput"
    return {
        "size": choice["size"],
        "reason": reason,
        "peak_throughput": peak,
        "peak_size": peak_run["size"],
        "p99_limit_ms": limit,
    }


def sweep_report(
    groups: dict[str, list[dict[str, Any]]], recommendations: dict[str, dict[str, Any] | None]
) -> list[str]:
    """Per backend: throughput and latency at each size, and the recommended size."""
    lines: list[str] = []
    for backend, runs in groups.items():
        rec = recommendations.get(backend)
        chosen = rec["size"] if rec else None
        rows = [
            [
                str(run["size"]),
                f"{run['throughput']:,.0f}",
                _ms(run["latency_p50_ms"]),
                _ms(run["latency_p99_ms"]),
                _ms(run["wait_p99_ms"]),
                f"{run['fairness']:.3f}",
                str(run["errors"]),
                "<- recommended" if run["size"] == chosen else "",
            ]
            for run in runs
        ]
        header = ["max_size", "ops/s", "p50 ms", "p99 ms", "wait p99", "fairness", "errors", ""]
        lines.append(f"{backend}:")
        lines += _table(header, rows, indent="  ", left=(len(header) - 1,))
        if rec is None:
            lines.append("  no recommendation: no cycle completed")
        else:
            lines.append(f"  recommended max_size={rec['size']}: {rec['reason']}")
        lines.append("")
    lines += textwrap.wrap(
        "p50/p99: latency of a whole cycle (acquire wait + round trip), in ms.  Size the pool from "
        "measurements like these, not from the number of workers (HikariCP, 'About Pool Sizing').",
        100,
    )
    return lines


# ------------------------------------------------------------------- plot


def require_matplotlib() -> None:
    """Fail early, before any measurement, when ``--plot`` cannot work."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise CLIError(f"--plot needs matplotlib, which is not installed: {_PLOT_HINT}", USAGE) from None


def check_plot_path(path: str) -> None:
    """Fail early when ``--plot FILE`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"--plot {path}: directory {os.path.dirname(path) or '.'} does not exist", USAGE)
    if os.path.splitext(path)[1].lower() not in (".png", ".svg", ".pdf"):
        raise CLIError(f"--plot {path}: use a .png, .svg or .pdf file name", USAGE)


def plot_sweep(
    path: str,
    groups: dict[str, list[dict[str, Any]]],
    recommendations: dict[str, dict[str, Any] | None],
    title: str,
) -> None:
    """Draw throughput and p99 latency against pool size, one line per backend; mark the recommendation."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 7.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    sizes: set[int] = set()
    for backend, runs in groups.items():
        xs = [run["size"] for run in runs]
        sizes.update(xs)
        (line,) = top.plot(xs, [run["throughput"] for run in runs], marker="o", label=backend)
        bottom.plot(xs, [run["latency_p99_ms"] for run in runs], marker="o", label=backend)
        rec = recommendations.get(backend)
        if rec is not None:
            run = next(run for run in runs if run["size"] == rec["size"])
            color = line.get_color()
            top.plot([run["size"]], [run["throughput"]], marker="*", markersize=16, color=color)
            bottom.plot([run["size"]], [run["latency_p99_ms"]], marker="*", markersize=16, color=color)
    ticks = sorted(sizes)
    for axes in (top, bottom):
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks)
        axes.set_xticklabels([str(size) for size in ticks])
        axes.grid(True, alpha=0.3)
    top.set_ylabel("throughput (ops/s)")
    top.set_ylim(bottom=0)
    top.legend(title="backend (* = recommended)")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("pool max_size")
    fig.suptitle(title)
    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot write the plot to {path}: {exc}") from exc
