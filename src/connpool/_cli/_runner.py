"""The parent process: one child process per backend, a progress bar, the embedded echo server.

gevent and eventlet cannot share a process (each monkey-patches the standard
library its own way), and a fair comparison wants each runtime alone anyway,
so every backend runs in a fresh ``python -c BOOT BACKEND SPEC`` process (see
:mod:`connpool._cli._child`), one after the other.  Unless ``--target`` names
a server, the parent serves as the echo server for all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from ._child import BOOT, RESULT_MARK
from ._errors import CLIError
from ._targets import Target

__all__ = ["Outcome", "Plan", "Progress", "embedded_echo_server", "run_plan"]

#: rough seconds a child needs besides its measurements (interpreter, imports, pool fill)
_STARTUP = 0.6
_PER_RUN = 0.15


@dataclass
class Plan:
    """What to run: the backends, the target and the workload."""

    backends: list[str]
    target: Target
    sizes: list[int]
    workers: int
    duration: float
    payload: int
    connect_timeout: float

    def spec(self) -> str:
        """The JSON a child receives."""
        return json.dumps(
            {
                "target": asdict(self.target),
                "sizes": self.sizes,
                "workers": self.workers,
                "duration": self.duration,
                "payload": self.payload,
                "connect_timeout": self.connect_timeout,
            }
        )

    def expected_seconds(self) -> float:
        """About how long one backend's process runs."""
        return _STARTUP + len(self.sizes) * (self.duration + _PER_RUN)

    def limit_seconds(self) -> float:
        """After this long a backend's process is killed and reported as stuck."""
        return 30.0 + len(self.sizes) * (2 * self.duration + 3 * self.connect_timeout + 20.0)


@dataclass
class Outcome:
    """The runs that finished and the backends that failed (backend -> message)."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Progress:
    """A one-line text progress bar on a terminal; silent when disabled."""

    WIDTH = 30

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._shown = False

    def show(self, label: str, fraction: float, elapsed: float, total: float) -> None:
        """Draw the bar ``fraction`` (0..1) full, with ``label`` and the elapsed/estimated time."""
        if not self._enabled:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        filled = round(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._stream.write(f"\r[{bar}] {fraction:4.0%}  {label:<10} {elapsed:5.1f}/{total:.0f} s ")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the bar."""
        if self._shown:
            self._stream.write("\r" + " " * (self.WIDTH + 40) + "\r")
            self._stream.flush()
            self._shown = False


def _child_env() -> dict[str, str]:
    """The environment of a child: this process's, with this connpool first on the path."""
    import connpool

    root = os.path.dirname(os.path.dirname(os.path.abspath(connpool.__file__)))
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not path else os.pathsep.join([root, path])
    return env


def run_plan(plan: Plan, progress: Progress, check: Callable[[], None] | None = None) -> Outcome:
    """Run every backend of ``plan`` in its own process, one after the other.

    ``check`` (which raises :class:`CLIError` when the target is down) runs
    before every backend but the first, so a server that went away fails
    the remaining backends at once instead of after their connect timeouts.
    """
    outcome = Outcome()
    env = _child_env()
    spec = plan.spec()
    per_backend = plan.expected_seconds()
    total = per_backend * len(plan.backends)
    started = time.monotonic()
    try:
        for index, backend in enumerate(plan.backends):
            if index and check is not None:
                try:
                    check()
                except CLIError as exc:
                    outcome.failed[backend] = str(exc)
                    continue
            runs, error = _run_child(
                backend,
                spec=spec,
                env=env,
                plan=plan,
                progress=progress,
                done_before=index * per_backend,
                total=total,
                started=started,
            )
            if error is not None:
                outcome.failed[backend] = error
            outcome.runs.extend(runs)
    finally:
        progress.clear()
    return outcome


def _run_child(
    backend: str,
    *,
    spec: str,
    env: dict[str, str],
    plan: Plan,
    progress: Progress,
    done_before: float,
    total: float,
    started: float,
) -> tuple[list[dict[str, Any]], str | None]:
    expected = plan.expected_seconds()
    limit = plan.limit_seconds()
    if backend == "eventlet" and plan.target.kind == "postgresql":
        # psycopg's C wait function would block eventlet's hub: use its select()-based one,
        # as connpool.contrib.psycopg advises eventlet users to do.
        env = {"PSYCOPG_WAIT_FUNC": "wait_select", **env}
    proc = subprocess.Popen(
        [sys.executable, "-c", BOOT, backend, spec],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    child_started = time.monotonic()
    stuck = False
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if now - child_started > limit:
                    proc.kill()
                    out, err = proc.communicate()
                    stuck = True
                    break
                mine = min((now - child_started) / expected, 0.99) * expected
                progress.show(backend, (done_before + mine) / total, now - started, total)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if stuck:
        return [], f"did not finish within {limit:.0f} s (killed)"
    result = _parse_result(out)
    if result is None:
        lines = [line for line in err.splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        return [], f"the benchmark process failed: {detail}"
    if "error" in result:
        return [], str(result["error"])
    return list(result["runs"]), None


def _parse_result(out: str) -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                value = json.loads(line[len(RESULT_MARK) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


@contextlib.contextmanager
def embedded_echo_server() -> Iterator[Target]:
    """An echo server on threads in this process, for the children to measure."""
    from ..net.echo import start_echo_server

    server = start_echo_server("127.0.0.1", 0, backend="threading")
    try:
        host, port = server.address
        yield Target("tcp", f"tcp://{host}:{port}", host, port, embedded=True)
    finally:
        server.close()
