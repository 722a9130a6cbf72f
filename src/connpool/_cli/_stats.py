"""Small statistics for the benchmark: percentiles, Jain's fairness index, one run's summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["jain", "percentile", "summarize"]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (nearest rank) of already sorted values; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(pct / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def jain(counts: Sequence[int]) -> float:
    """Jain's fairness index of per-worker op counts.

    ``(sum x)^2 / (n * sum x^2)``: 1.0 when every worker did the same number
    of operations, ``1/n`` when one worker did them all; 0.0 when nobody did any.
    """
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if not counts or squares == 0:
        return 0.0
    return total * total / (len(counts) * squares)


def summarize(
    *,
    backend: str,
    size: int,
    workers: int,
    elapsed: float,
    counts: Sequence[int],
    waits: list[float],
    uses: list[float],
    latencies: list[float],
    errors: int,
    first_error: str | None,
    stats: dict[str, Any],
) -> dict[str, Any]:
    """One run's figures as a JSON-serializable dict (times in milliseconds).

    ``waits``, ``uses`` and ``latencies`` are seconds per cycle: the time
    ``acquire`` waited, the time the connection was held, and both together.
    """
    waits.sort()
    uses.sort()
    latencies.sort()
    ops = sum(counts)
    return {
        "backend": backend,
        "size": size,
        "workers": workers,
        "elapsed_s": elapsed,
        "ops": ops,
        "throughput": ops / elapsed if elapsed > 0 else 0.0,
        "wait_p50_ms": percentile(waits, 50) * 1e3,
        "wait_p99_ms": percentile(waits, 99) * 1e3,
        "wait_max_ms": (waits[-1] if waits else 0.0) * 1e3,
        "use_p50_ms": percentile(uses, 50) * 1e3,
        "latency_p50_ms": percentile(latencies, 50) * 1e3,
        "latency_p99_ms": percentile(latencies, 99) * 1e3,
        "connect_p50_ms": float(stats.get("connect_p50", 0.0)),
        "fairness": jain(counts),
        "worker_ops_min": min(counts, default=0),
        "worker_ops_max": max(counts, default=0),
        "errors": errors,
        "first_error": first_error,
        "stats": stats,
    }
