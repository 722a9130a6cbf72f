"""The benchmark report's arithmetic: best of N rounds, and connpool's per-round paired ratios.

Pure functions of records, checked on made-up figures (no pool runs here).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # run.py's siblings import each other by name
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run() -> ModuleType:
    return _load("run")


@pytest.fixture(scope="module")
def common() -> ModuleType:
    return _load("bench_common")


def _row(pool: str, kind: str, rounds: list[float | None]) -> dict[str, Any]:
    good = [r for r in rounds if r is not None]
    return {
        "pool": pool,
        "kind": kind,
        "note": None,
        "error": None if good else "failed",
        "ops_per_s": max(good) if good else None,
        "wait_p50_us": 10.0,
        "wait_p99_us": 20.0,
        "wait_max_us": 30.0,
        "fairness": 1.0,
        "round_ops": rounds,
    }


def test_keep_best_keeps_the_fastest_round_and_every_rounds_figure(common: ModuleType) -> None:
    tries = [
        {"ops_per_s": 90.0, "error": None, "tag": "first"},
        {"ops_per_s": None, "error": "boom", "tag": "second"},
        {"ops_per_s": 120.0, "error": None, "tag": "third"},
    ]
    best = common.keep_best(tries)
    assert best["tag"] == "third"
    assert best["rounds"] == 3
    assert best["round_ops"] == [90.0, None, 120.0]
    assert "round_ops" not in tries[2]  # a copy: the round's own record is left as measured


def test_keep_best_of_rounds_that_all_failed_is_the_last_failure(common: ModuleType) -> None:
    tries = [{"ops_per_s": None, "error": "a"}, {"ops_per_s": None, "error": "b"}]
    best = common.keep_best(tries)
    assert best["error"] == "b"
    assert best["round_ops"] == [None, None]


def test_paired_ratios_pair_round_i_with_round_i_and_skip_failed_rounds(run: ModuleType) -> None:
    subject = _row("connpool", "subject", [100.0, 90.0, None, 80.0])
    other = _row("floor", "floor", [100.0, 50.0, 70.0, 160.0])
    assert run.paired_ratios(subject, other) == [1.0, 1.8, 0.5]
    # Best over best would say 100/160: the pairs keep each round's machine state together.
    assert run.paired_ratios(subject, _row("x", "library", [])) == []


def test_connpools_ratio_table_prints_the_median_and_range_of_the_paired_rounds(run: ModuleType) -> None:
    rows = [
        _row("connpool Pool(threading)", "subject", [100.0, 90.0, 80.0]),
        _row("minimal fair pool", "reference", [200.0, 200.0, 100.0]),
        _row("deque floor", "floor", [100.0, 100.0, 100.0]),
        _row("broken pool", "library", [None, None, None]),
    ]
    text = "\n".join(run.format_table("threading", 16, "contended", rows))
    assert "ops/s per round: median (range)" in text
    minimal = next(line for line in text.splitlines() if line.startswith("  minimal fair pool"))
    assert minimal.endswith("0.50x (0.45-0.80)"), minimal  # 0.5, 0.45, 0.8
    floor = next(line for line in text.splitlines() if line.startswith("  deque floor"))
    assert floor.endswith("0.90x (0.80-1.00)"), floor
    assert not any(line.startswith("  broken pool") for line in text.splitlines())


def test_one_round_gives_no_spread(run: ModuleType) -> None:
    rows = [_row("connpool Pool(gevent)", "subject", [100.0]), _row("deque floor", "floor", [200.0])]
    floor = next(
        line for line in run.format_table("gevent", 200, "io", rows) if line.startswith("  deque floor")
    )
    assert floor.split()[-1] == "-"
    assert "0.50x" in floor  # the best-of ratio is still there


@pytest.mark.parametrize(
    ("p99", "fairness", "shown"),
    [
        (120.4, 0.987, "p99 120 us  fairness 0.987"),
        (120.4, None, "p99 120 us  fairness -"),  # waits, but no worker finished a cycle
        (None, 1.0, "p99 -  fairness 1.000"),
    ],
)
def test_progress_line_shows_a_missing_figure_as_a_dash(
    common: ModuleType,
    capsys: pytest.CaptureFixture[str],
    p99: float | None,
    fairness: float | None,
    shown: str,
) -> None:
    record = {**_row("connpool Pool(gevent)", "subject", [1234.0]), "workload": "io", "error": None}
    record.update(ops_per_s=1234.0, wait_p99_us=p99, fairness=fairness, teardown_error=None)
    common.progress(record)
    line = capsys.readouterr().err.strip()
    assert line.endswith(f"1,234 ops/s  {shown}"), line
