"""The ``connpool`` command line, run the way users run it: in subprocesses.

Measurements are kept short (``--duration 0.3``, a few workers), so the whole
file runs in well under a minute.  Missing libraries are simulated by running
``python -c`` with ``sys.modules[name] = None`` before calling the command's
``main``: the import then fails exactly as if the library were not installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connpool._cli._report import recommend
from connpool._cli._stats import jain, percentile
from connpool._cli._targets import mask_password, parse_target
from connpool.backends import available_backends
from testenv import ENABLED, MONKEY_PATCHED, skip_or_fail

# The command runs every backend in processes of its own, whatever this process
# runs: test it once, in the default session, not again in each green session.
pytestmark = pytest.mark.skipif(
    "threading" not in ENABLED or bool(MONKEY_PATCHED),
    reason="the CLI tests run in the default (threading) session only",
)

FAST = ["--duration", "0.3", "--workers", "4"]
RUN_FIELDS = {
    "backend",
    "size",
    "workers",
    "ops",
    "throughput",
    "wait_p50_ms",
    "wait_p99_ms",
    "wait_max_ms",
    "use_p50_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "connect_p50_ms",
    "fairness",
    "errors",
    "stats",
}
TIMEOUT = 120


def connpool(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m connpool ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "connpool", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def connpool_without(blocked: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command in a process where the modules ``blocked`` cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from connpool.__main__ import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=TIMEOUT
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of error output a failing command prints."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rude_server() -> Iterator[int]:
    """A TCP server that accepts and closes at once (not an echo server); yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)  # so the thread notices `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# ------------------------------------------------------------------ bench


def test_default_bench_runs_every_installed_backend() -> None:
    result = connpool("bench", *FAST, "--size", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("backend"))
    for column in ("ops/s", "wait p50", "wait p99", "wait max", "use p50", "connect p50", "fairness"):
        assert column in header
    rows = {line.split()[0]: line for line in lines[lines.index(header) + 1 :] if line.strip()}
    for backend in available_backends():
        assert backend in rows, result.stdout
        assert "FAILED" not in rows[backend]
    assert "embedded echo server" in lines[0]
    assert "pool.stats()" in result.stdout


def test_json_has_the_fields() -> None:
    result = connpool("bench", *FAST, "--size", "3", "--backend", "threading,asyncio", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["command"] == "bench"
    assert report["embedded_server"] is True
    assert report["backends"] == ["threading", "asyncio"]
    assert report["failed"] == []
    runs = report["results"]
    assert [run["backend"] for run in runs] == ["threading", "asyncio"]
    for run in runs:
        assert run.keys() >= RUN_FIELDS
        assert run["size"] == 3
        assert run["workers"] == 4
        assert run["ops"] > 0
        assert run["throughput"] > 0
        assert run["errors"] == 0
        assert 0 < run["fairness"] <= 1.0
        assert run["wait_p50_ms"] <= run["wait_p99_ms"] <= run["wait_max_ms"]
        stats = run["stats"]
        assert stats["backend"] == run["backend"]
        assert stats["max_size"] == 3
        assert stats["size"] == stats["idle"] + stats["in_use"]
        assert stats["acquired"] >= run["ops"]
        assert stats["connects"] >= 3


def test_backend_option_is_repeatable() -> None:
    result = connpool("bench", *FAST, "-b", "threading", "-b", "trio", "--json")
    assert result.returncode == 0, result.stderr
    assert [run["backend"] for run in json.loads(result.stdout)["results"]] == ["threading", "trio"]


def test_refused_target_fails_with_one_line() -> None:
    port = free_port()
    result = connpool("bench", *FAST, "--target", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("connpool bench: error: cannot reach")
    assert "refused" in line
    assert result.stdout == ""


def test_target_that_does_not_echo_fails(rude_server: int) -> None:
    result = connpool("bench", *FAST, "--target", f"tcp://127.0.0.1:{rude_server}")
    assert result.returncode == 1
    assert "must be an echo server" in error_line(result)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("ftp://example.com", "unsupported target scheme 'ftp'"),
        ("localhost:7000", "must be a URL"),
        ("tcp://127.0.0.1", "needs a host and a port"),
        ("tcp://127.0.0.1:99999", "bad port"),
    ],
)
def test_bad_target_url_is_a_usage_error(target: str, expected: str) -> None:
    result = connpool("bench", *FAST, "--target", target)
    assert result.returncode == 2
    assert expected in error_line(result)


def test_external_echo_target(tmp_path: Path) -> None:
    from connpool.net.echo import start_echo_server

    with start_echo_server(backend="threading") as server:
        result = connpool(
            "bench", *FAST, "-b", "threading,asyncio", "--target", f"tcp://127.0.0.1:{server.port}"
        )
    assert result.returncode == 0, result.stderr
    assert f"target tcp://127.0.0.1:{server.port}" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--workers", "-3"], "--workers"),
        (["--workers", "0"], "--workers"),
        (["--size", "x"], "--size"),
        (["--duration", "0"], "--duration"),
        (["--duration", "-1"], "--duration"),
        (["--payload", "0"], "--payload"),
        (["--sweep", "1,-2"], "--sweep"),
        (["--backend", "nosuch"], "unknown backend 'nosuch'"),
        (["--size", "2", "--sweep", "1,2"], "either --size or --sweep"),
        (["--plot", "x.png"], "--plot draws a sweep"),
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_option_is_a_usage_error(args: list[str], expected: str) -> None:
    result = connpool("bench", *args)
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("connpool bench: error:")
    assert expected in line


def test_no_command_prints_help() -> None:
    result = connpool()
    assert result.returncode == 2
    assert "bench" in result.stderr
    assert "size" in result.stderr


def test_help_texts() -> None:
    for args in (["--help"], ["bench", "--help"], ["size", "--help"]):
        result = connpool(*args)
        assert result.returncode == 0, result.stderr
        assert "usage: connpool" in result.stdout
    assert "HikariCP" in connpool("size", "--help").stdout


def test_unavailable_backend_names_the_extra() -> None:
    result = connpool_without(["trio"], "bench", *FAST, "--backend", "trio")
    assert result.returncode == 2
    assert 'pip install "connpool[trio]"' in error_line(result)


def test_default_bench_skips_backends_that_are_not_installed() -> None:
    result = connpool_without(["gevent", "eventlet", "trio"], "bench", *FAST, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backends"] == ["threading", "asyncio"]
    skipped = {item["backend"]: item["reason"] for item in report["skipped"]}
    assert set(skipped) == {"gevent", "eventlet", "trio"}
    assert 'pip install "connpool[gevent]"' in skipped["gevent"]


# ------------------------------------------------------------------- size


def test_size_sweep_recommends_a_size_per_backend() -> None:
    result = connpool("size", "--sweep", "1,2", *FAST, "-b", "threading,asyncio")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("recommended max_size=") == 2
    assert "threading:" in out
    assert "asyncio:" in out
    assert "<- recommended" in out


def test_bench_sweep_json() -> None:
    result = connpool("bench", "--sweep", "2,1", *FAST, "-b", "trio", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sizes"] == [1, 2]
    assert [run["size"] for run in report["results"]] == [1, 2]
    recommendation = report["recommendations"]["trio"]
    assert recommendation["size"] in (1, 2)
    assert "peak throughput" in recommendation["reason"]


def test_plot_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    png = tmp_path / "sizes.png"
    result = connpool_without(
        ["matplotlib"], "size", "--sweep", "1,2", *FAST, "-b", "threading", "--plot", str(png)
    )
    assert result.returncode == 2
    assert 'pip install "connpool[plot]"' in error_line(result)
    assert result.stdout == ""  # it failed before measuring anything
    assert not png.exists()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "sizes.png"
    result = connpool("size", "--sweep", "1,2", *FAST, "-b", "threading,asyncio", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {png}" in result.stdout


# ----------------------------------------------------------- real servers


@pytest.mark.services
def test_redis_target() -> None:
    redis = pytest.importorskip("redis")
    url = os.environ.get("CONNPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as exc:
        skip_or_fail(f"no Redis server at {url}: {exc}")
    result = connpool("bench", *FAST, "--target", url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "trio" not in report["backends"]  # redis-py has no trio support: skipped
    assert all(run["ops"] > 0 and run["errors"] == 0 for run in report["results"])


@pytest.mark.services
def test_postgresql_target() -> None:
    psycopg = pytest.importorskip("psycopg")
    url = os.environ.get("CONNPOOL_TEST_PG_DSN", "postgresql://127.0.0.1:5432/postgres")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        skip_or_fail(f"no PostgreSQL server at {url}: {exc}")
    result = connpool("bench", *FAST, "--target", url, "-b", "threading,asyncio", "--json")
    assert result.returncode == 0, result.stderr
    assert [run["backend"] for run in json.loads(result.stdout)["results"]] == ["threading", "asyncio"]


def test_trio_cannot_drive_redis() -> None:
    pytest.importorskip("redis")
    result = connpool("bench", "--target", "redis://127.0.0.1:6379", "-b", "trio")
    assert result.returncode == 2
    assert "redis-py has no trio support" in error_line(result)


# ------------------------------------------------------------- in-process


def test_percentile_and_jain() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0
    assert jain([5, 5, 5, 5]) == 1.0
    assert jain([10, 0, 0, 0]) == pytest.approx(0.25)
    assert jain([0, 0]) == 0.0


def _run(size: int, throughput: float, p99: float) -> dict[str, Any]:
    return {"size": size, "throughput": throughput, "latency_p99_ms": p99, "ops": 1}


def test_recommend_smallest_size_near_the_peak() -> None:
    runs = [_run(1, 1000, 50), _run(2, 1900, 20), _run(4, 2950, 10), _run(8, 3000, 9.5), _run(16, 2990, 12)]
    rec = recommend(runs, 0.95, None)
    assert rec is not None
    assert rec["size"] == 4
    assert rec["peak_size"] == 8
    assert "larger pools add connections, not throughput" in rec["reason"]


def test_recommend_skips_sizes_whose_p99_is_too_high() -> None:
    runs = [_run(1, 1000, 50), _run(2, 2900, 40), _run(4, 3000, 10), _run(8, 2980, 11)]
    assert recommend(runs, 0.95, None)["size"] == 4  # type: ignore[index]
    assert recommend(runs, 0.95, 45.0)["size"] == 2  # type: ignore[index]
    no_fit = recommend(runs, 0.95, 1.0)
    assert no_fit is not None
    assert no_fit["size"] == 2
    assert no_fit["reason"].startswith("no size kept p99 under")


def test_recommend_says_when_the_largest_size_wins() -> None:
    rec = recommend([_run(1, 1000, 10), _run(2, 2000, 10)], 0.95, None)
    assert rec is not None
    assert rec["size"] == 2
    assert "sweep higher sizes" in rec["reason"]
    assert recommend([{**_run(1, 0, 0), "ops": 0}], 0.95, None) is None


def test_target_parsing() -> None:
    target = parse_target("tcp://127.0.0.1:7000")
    assert (target.kind, target.host, target.port) == ("tcp", "127.0.0.1", 7000)
    assert mask_password("redis://:secret@db:6379/0") == "redis://:***@db:6379/0"
    assert mask_password("postgresql://app:pw@db/app") == "postgresql://app:***@db/app"
    assert mask_password("tcp://h:1") == "tcp://h:1"
