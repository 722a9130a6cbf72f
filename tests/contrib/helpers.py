"""Servers and waiting helpers for the connector tests (real Redis and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from testenv import MONKEY_PATCHED, skip_or_fail

#: Where the shared servers are; override in the environment.
REDIS_URL = os.environ.get("CONNPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
PG_DSNS = [
    dsn
    for dsn in (
        os.environ.get("CONNPOOL_TEST_PG_DSN"),
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgresql://127.0.0.1:5432/postgres",
    )
    if dsn
]

LONG = 10.0


def require_concurrency(sched: Any) -> None:
    """Skip unless blocking socket calls run concurrently here: threads, or a monkey-patched process."""
    if sched.name not in ("threading", MONKEY_PATCHED):
        pytest.skip(f"{sched.name} without monkey-patching: the client's socket calls block the hub")


def timed_concurrently(sched: Any, fn: Callable[[], object], n: int) -> float:
    """Seconds taken by ``n`` concurrent runs of ``fn`` on ``sched``."""
    started = time.monotonic()
    handles = [sched.spawn(fn) for _ in range(n)]
    for handle in handles:
        assert handle.join(LONG)
    return time.monotonic() - started


def free_port() -> int:
    """A TCP port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(sched: Any, predicate: Callable[[], bool], timeout: float = LONG, what: str = "") -> None:
    """Poll ``predicate`` with the scheduler's sleep (a switch point on green runtimes)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not reached in {timeout} s: {what}"
        sched.sleep(0.005)


async def await_until(predicate: Callable[[], bool], timeout: float = LONG, what: str = "") -> None:
    import anyio

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not reached in {timeout} s: {what}"
        await anyio.sleep(0.005)


def settle(sched: Any, pool: Any) -> Any:
    """Wait until every returned connection went through ``reset`` (in the background); check."""
    wait_until(sched, lambda: pool.stats().in_use == 0, what="connections back in the pool")
    return assert_consistent(pool)


async def asettle(pool: Any) -> Any:
    """:func:`settle` for an ``AsyncPool``."""
    await await_until(lambda: pool.stats().in_use == 0, what="connections back in the pool")
    return assert_consistent(pool)


def assert_consistent(pool: Any, *, in_use: int | None = 0) -> Any:
    """The pool's invariants hold and nobody waits; returns the stats."""
    stats = pool.stats()
    assert stats.size == stats.idle + stats.in_use, stats
    assert stats.waiting == 0, stats
    if in_use is not None:
        assert stats.in_use == in_use, stats
    return stats


def pg_dsn() -> str:
    """The first DSN of ``PG_DSNS`` that accepts a connection, else skip (or fail in CI)."""
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed")
    errors = []
    for dsn in PG_DSNS:
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
        except psycopg.Error as exc:
            errors.append(f"{dsn}: {str(exc).strip()}")
        else:
            return dsn
    skip_or_fail("no PostgreSQL server reachable: " + "; ".join(errors))
    raise AssertionError("unreachable")


def redis_url() -> str:
    """``REDIS_URL`` if a Redis server answers there, else skip (or fail in CI)."""
    try:
        import redis
    except ImportError:
        skip_or_fail("redis-py is not installed")
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        skip_or_fail(f"no Redis server at {REDIS_URL}: {exc}")
    return REDIS_URL


class PrivateRedis:
    """A throw-away ``redis-server`` on a free port, that tests may kill and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            skip_or_fail("the redis-server binary is not on PATH")
        self.binary = str(binary)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = LONG) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    skip_or_fail(f"could not start redis-server on port {self.port}")
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server at once (SIGKILL: no goodbye to the clients)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
