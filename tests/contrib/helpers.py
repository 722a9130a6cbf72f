"""Servers and waiting helpers for the connector tests (real Redis and PostgreSQL).

The shared local servers are found by :func:`redis_url` and :func:`pg_dsn`; tests that
stop and restart a server get one of their own (:class:`PrivateRedis`,
:class:`PrivatePostgres`, both :class:`PrivateServer`), on a free port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
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


class Load:
    """What each worker of a restart-under-load test saw, and the conditions the test waits for.

    A worker counts a success with :meth:`success`, an expected failure
    (``expected``: connection errors and ``PoolTimeout``) with :meth:`failure`;
    anything else goes to :meth:`unexpected` and should end the worker.  The
    predicates are also true once something unexpected happened, so that
    the test stops waiting and reports it.
    """

    def __init__(self, workers: int, expected: tuple[type[BaseException], ...]) -> None:
        self.expected = expected
        self.ok = [0] * workers
        self.failed = [0] * workers
        self.seen: set[str] = set()  # names of the expected errors seen
        self.errors: list[BaseException] = []  # the unexpected ones
        self._marked = [0] * workers

    def success(self, worker: int) -> None:
        self.ok[worker] += 1

    def failure(self, worker: int, exc: BaseException) -> None:
        self.failed[worker] += 1
        self.seen.add(type(exc).__name__)

    def unexpected(self, exc: BaseException) -> None:
        self.errors.append(exc)

    def running(self, successes: int = 10) -> bool:
        """Every worker succeeded ``successes`` times."""
        return min(self.ok) >= successes or bool(self.errors)

    def outage_seen(self) -> bool:
        """Every worker failed at least once."""
        return min(self.failed) >= 1 or bool(self.errors)

    def mark(self) -> None:
        """Remember the successes so far (call right after the restart)."""
        self._marked = list(self.ok)

    def recovered(self, successes: int = 10) -> bool:
        """Every worker succeeded ``successes`` more times since :meth:`mark`."""
        return all(n >= before + successes for n, before in zip(self.ok, self._marked)) or bool(self.errors)

    def check(self) -> None:
        """Only expected errors were seen, and some were."""
        names = ", ".join(cls.__name__ for cls in self.expected)
        assert not self.errors, f"errors other than {names}: {self.errors!r}"
        assert self.seen, "no worker saw the outage"


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


class PrivateServer:
    """A server process of the test's own on a free 127.0.0.1 port, that tests may stop and restart.

    Subclasses give the command line (:meth:`command`), a readiness probe
    (:meth:`ready`) and the signal for each stop mode (:attr:`STOP_SIGNALS`).
    A server that never came up skips the test (or fails it in CI); one that
    ran before and does not come back fails it.
    """

    name = "server"
    #: ``stop(mode)``: the signal that stops the server in that mode.
    STOP_SIGNALS: dict[str, int] = {"immediate": signal.SIGKILL}

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0  # successful starts so far

    # -- for subclasses

    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""
        raise NotImplementedError

    def popen_options(self) -> dict[str, Any]:
        """Extra ``subprocess.Popen`` arguments (output, user...)."""
        return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

    def ready(self) -> bool:
        """Whether the server accepts clients (one quick probe)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def diagnostics(self) -> str:
        """What to add to the message when the server does not start."""
        return ""

    # -- for tests

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = LONG) -> None:
        """Start the server on its port and wait until it accepts clients."""
        assert not self.running, f"{self.name} already running"
        if self.proc is not None:  # it died on its own: forget it
            self.proc.wait()
            self.proc = None
        self.proc = subprocess.Popen(self.command(), **self.popen_options())
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                reason = f"could not start {self.name} on port {self.port}{self.diagnostics()}"
                self.stop()
                if self.started:
                    pytest.fail(f"{reason} (it ran before: a restart must work)")
                skip_or_fail(reason)
            time.sleep(0.02)
        self.started += 1

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server and wait until it exited; ``"immediate"``: no goodbye to the clients."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(self.STOP_SIGNALS[mode])
        try:
            proc.wait(LONG)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PrivateRedis(PrivateServer):
    """A throw-away ``redis-server`` on a free port, killed by ``stop()``."""

    name = "redis-server"

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            skip_or_fail("the redis-server binary is not on PATH")
        super().__init__()
        self.binary = str(binary)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
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
        ]


def pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or ``None``.

    ``CONNPOOL_TEST_PG_BINDIR``, else ``pg_config --bindir``, else ``PATH``,
    else the newest of the usual install locations.
    """
    candidates: list[Path] = []
    if os.environ.get("CONNPOOL_TEST_PG_BINDIR"):
        candidates.append(Path(os.environ["CONNPOOL_TEST_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    candidates += [Path("/usr/local/pgsql/bin"), Path("/usr/pgsql/bin")]
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


def _pg_os_user() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``None`` (ourselves) unless we are root, which it refuses."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("CONNPOOL_TEST_PG_OS_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        skip_or_fail(
            f"PostgreSQL refuses to run as root and there is no {name!r} account to run it as "
            "(set CONNPOOL_TEST_PG_OS_USER to another non-root account)"
        )
        raise AssertionError("unreachable") from None


class PrivatePostgres(PrivateServer):
    """A throw-away PostgreSQL cluster on a free port, that tests may stop and restart.

    ``initdb`` runs once, in the constructor, into a temporary directory
    (trust authentication, superuser ``postgres``, durability off for speed);
    ``start()`` runs ``postgres`` in the foreground, listening on 127.0.0.1
    and with its Unix socket in that directory; ``stop(mode)`` sends the
    signal of ``pg_ctl stop -m mode`` and waits for the server to exit
    (``"immediate"``: the backends die at once, no shutdown checkpoint,
    crash recovery at the next start).  PostgreSQL refuses to run as root:
    as root it runs as ``CONNPOOL_TEST_PG_OS_USER`` (default ``postgres``),
    which owns the directory.  :meth:`cleanup` stops it and removes the
    directory.
    """

    name = "PostgreSQL"
    STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

    def __init__(self) -> None:
        try:
            import psycopg
        except ImportError:
            skip_or_fail("psycopg is not installed")
        self._psycopg = psycopg
        bindir = pg_bindir()
        if bindir is None:
            skip_or_fail("no PostgreSQL server binaries (initdb, postgres); set CONNPOOL_TEST_PG_BINDIR")
            raise AssertionError("unreachable")
        self.bindir = bindir
        self.os_user = _pg_os_user()
        super().__init__()
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.root = Path(tempfile.mkdtemp(prefix="connpool-pg-"))
        try:
            self.data = self.root / "data"
            self.sockets = self.root / "sockets"
            self.sockets.mkdir()
            self.log = self.root / "postgres.log"
            self._log = self.log.open("ab")  # the server's output, for the message when it fails
            if self.os_user is not None:
                for path in (self.root, self.sockets):
                    os.chown(path, self.os_user.pw_uid, self.os_user.pw_gid)
            self._initdb()
        except BaseException:
            self.cleanup()
            raise

    def _as_user(self) -> dict[str, Any]:
        """``Popen`` arguments that run a command as :attr:`os_user`, in the cluster's directory."""
        options: dict[str, Any] = {"cwd": self.root}
        if self.os_user is not None:
            options.update(user=self.os_user.pw_uid, group=self.os_user.pw_gid, extra_groups=[])
        return options

    def _initdb(self) -> None:
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._as_user(),
        )
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()[-800:]
            as_user = ""
            if self.os_user is not None:
                as_user = f" as {self.os_user.pw_name!r} (who must be able to reach TMPDIR)"
            skip_or_fail(f"initdb{as_user} failed in {self.root} (exit {result.returncode}): {output}")

    def command(self) -> list[str]:
        return [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=50",
        ]

    def popen_options(self) -> dict[str, Any]:
        output = {"stdin": subprocess.DEVNULL, "stdout": self._log, "stderr": subprocess.STDOUT}
        return {**output, **self._as_user()}

    def ready(self) -> bool:
        psycopg = self._psycopg
        try:
            psycopg.connect(self.dsn, connect_timeout=2).close()
        except psycopg.OperationalError:  # refused, or "the database system is starting up"
            return False
        return True

    def diagnostics(self) -> str:
        try:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-10:]
        except OSError:
            return ""
        return ": " + " | ".join(tail) if tail else ""

    def backends(self, application_name: str) -> int:
        """How many server sessions have this ``application_name`` (from ``pg_stat_activity``)."""
        with self._psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def cleanup(self) -> None:
        """Stop the server and remove the cluster's directory."""
        self.stop()
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
        shutil.rmtree(self.root, ignore_errors=True)
