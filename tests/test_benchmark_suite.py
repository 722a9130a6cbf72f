"""``benchmarks/run.py``: every line-up runs every pool on every workload and prints its tables.

A smoke run (a few milliseconds per measurement): it catches an adapter that a library
release broke, a runtime process that fails, or a table that lost its ratios, not speed.
The other pools are the ``bench`` dependency group; where it is not installed their rows say
"not available" and the test skips, except where services are required (CI), where it fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testenv import ENABLED, MONKEY_PATCHED, skip_or_fail

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
RUNTIMES = ["threading", "gevent", "eventlet", "asyncio", "trio"]
WORKLOADS = {"uncontended", "contended", "io"}

pytestmark = pytest.mark.skipif(
    bool(MONKEY_PATCHED) or "asyncio" not in ENABLED, reason="runs once, in the default session"
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    for runtime in ("gevent", "eventlet", "trio"):
        pytest.importorskip(runtime, reason=f"the {runtime} line-up needs {runtime}")
    out = tmp_path_factory.mktemp("bench") / "results.json"
    short = ["--duration", "0.03", "--warmup", "0.01"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--runtime", "all", *short, "--strict", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.timeout(300)
def test_every_pool_of_every_line_up_is_measured(suite: tuple[str, dict[str, Any]]) -> None:
    _, data = suite
    payloads = {p["runtime"]: p for p in data["runtimes"]}
    assert sorted(payloads) == sorted(RUNTIMES)
    missing, broken = [], []
    for runtime, payload in payloads.items():
        assert payload.get("error") is None, payload["error"]
        records = payload["results"]
        pools = {r["pool"] for r in records}
        assert {r["workload"] for r in records} == WORKLOADS
        assert len(records) == len(pools) * len(WORKLOADS)  # each pool on each workload, once
        assert {"subject", "reference", "floor"} <= {r["kind"] for r in records}, runtime
        for r in records:
            if r["error"] is None:
                assert r["ops_per_s"] > 0, r
            elif r["error"].startswith("not available"):
                missing.append(f"{runtime}: {r['pool']}")
            else:
                broken.append(f"{runtime} {r['workload']} {r['pool']}: {r['error']}")
    assert not broken, "\n".join(broken)
    if missing:
        names = ", ".join(sorted(set(missing)))
        skip_or_fail(f"benchmark libraries not installed (the 'bench' dependency group): {names}")


@pytest.mark.timeout(300)
def test_full_featured_pools_run_under_monkey_patching_too(suite: tuple[str, dict[str, Any]]) -> None:
    _, data = suite
    for payload in data["runtimes"]:
        if payload["runtime"] in ("gevent", "eventlet"):
            libraries = {r["pool"] for r in payload["results"] if r["kind"] == "library"}
            for name in ("psycopg_pool", "sqlalchemy", "ProxyPatternPool", "generic-connection-pool"):
                assert any(pool.startswith(name) for pool in libraries), (payload["runtime"], name)


@pytest.mark.timeout(300)
def test_connpool_is_fifo_under_contention_on_every_runtime(tmp_path: Path) -> None:
    # Its own run, of connpool only and long enough for every worker to make a few dozen
    # cycles: in the smoke run's 30 ms window most of 200 workers finish two or three, and
    # Jain's index over such counts says more about where the window fell than about order.
    for runtime in ("gevent", "eventlet", "trio"):
        pytest.importorskip(runtime, reason=f"the {runtime} line-up needs {runtime}")
    out = tmp_path / "fifo.json"
    result = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--runtime", "all", "--only", "connpool",
            "--workload", "contended", "--workload", "io",
            "--duration", "0.4", "--warmup", "0.1", "--json", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert sorted(p["runtime"] for p in data["runtimes"]) == sorted(RUNTIMES)
    for payload in data["runtimes"]:
        assert {r["workload"] for r in payload["results"] if r["kind"] == "subject"} == {"contended", "io"}
        for r in payload["results"]:
            if r["kind"] == "subject" and r["workload"] != "uncontended":
                assert r["fairness"] >= 0.9, (payload["runtime"], r["workload"], r["fairness"])
                assert r["wait_max_us"] is not None


@pytest.mark.timeout(300)
def test_tables_print_ratios_to_the_others_the_minimal_pool_and_the_floor(
    suite: tuple[str, dict[str, Any]],
) -> None:
    stdout, _ = suite
    for runtime in RUNTIMES:
        for workload in WORKLOADS:
            assert re.search(rf"^== {runtime} \| {workload}: ", stdout, re.M), (runtime, workload)
    columns = r"ops/s +p50 us +p99 us +max us +fair +x best other +x minimal +x floor"
    header = re.compile(rf"^pool +{columns}$", re.M)
    assert len(header.findall(stdout)) == len(RUNTIMES) * len(WORKLOADS)
    assert re.search(r"^connpool Pool\(threading\) +[\d,]+ .* [\d.]+x +[\d.]+x +[\d.]+x$", stdout, re.M)
    assert stdout.count("connpool relative to each") == len(RUNTIMES) * len(WORKLOADS)


@pytest.mark.timeout(120)
def test_thread_switches_script_prints_a_row_per_pool() -> None:
    script = SCRIPT.parent / "thread_switches.py"
    args = ["--duration", "0.05", "--rounds", "1", "--pad", "10"]
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=100, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    number = r"[\d.]+"
    for name in ("connpool Pool\\(threading\\)", "minimal fair pool", "minimal fair pool \\+ 10 loop steps"):
        row = rf"^{name} +[\d,]+ +{number}x +{number} +{number} +{number} +{number}$"
        assert re.search(row, result.stdout, re.M), (name, result.stdout)
