"""``benchmarks/bytecodes.py``: the noise-free measure of a cycle's work is repeatable and parsed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from testenv import ENABLED, MONKEY_PATCHED

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bytecodes.py"

pytestmark = pytest.mark.skipif(
    bool(MONKEY_PATCHED) or "asyncio" not in ENABLED, reason="runs once, in the default session"
)


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_counts_are_the_same_on_every_run_and_name_connpools_functions() -> None:
    first = _run("asyncio", "uncontended", "--cycles", "300")
    assert first == _run("asyncio", "uncontended", "--cycles", "300")  # no noise: the point of it
    found = re.findall(r"^== .*?: ([\d,]+) bytecodes per cycle", first, re.M)
    totals = [int(n.replace(",", "")) for n in found]
    assert len(totals) == 2 and all(n > 0 for n in totals)
    assert "_pool.py:release" in first and "_core.py:checkout" in first
    assert re.search(r"^connpool / asyncio\.Queue: [\d.]+x the bytecodes per cycle$", first, re.M)


def test_threading_refuses_the_contended_workload() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "threading", "contended"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "only the uncontended workload" in result.stderr
