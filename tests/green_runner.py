"""Run the test suite in a process monkey-patched by gevent or eventlet.

    python tests/green_runner.py gevent   [pytest args...]
    python tests/green_runner.py eventlet [pytest args...]

The process is monkey-patched before anything else is imported (the way
PyMongo's green test runner does it), so every module the tests load -- the
standard library included -- sees the patched world, as an application that
patches at start-up would.  Then ``CONNPOOL_MONKEY_PATCHED`` and
``CONNPOOL_TEST_BACKENDS`` are set to the runtime's name and pytest runs
with the remaining arguments; the exit status is pytest's.

Async tests cannot run here and are skipped: async runtimes do not belong in a
monkey-patched process.  trio in particular cannot: under eventlet ``import
trio`` fails (eventlet's ``GreenSocket`` has no ``sendmsg``), and under gevent
``trio.run`` fails (gevent removes ``select.epoll``).  So in both runs ``trio``
is blocked (importing it raises ``ImportError``: ``pytest.importorskip("trio")``
skips, and connpool reports the trio backend as unavailable), anyio's pytest
plugin is disabled (it imports trio) and hypothesis is told not to load
third-party plugins (trio registers one).  pytest-timeout uses ``signal``: its
default ``thread`` method would run in a patched (green) thread.
"""

# The monkey-patching must come before every other import:
# ruff: noqa: E402

import sys

if __name__ != "__main__":  # pragma: no cover - pytest collects tests/, not this script
    raise ImportError("tests/green_runner.py is a script: python tests/green_runner.py gevent|eventlet ...")

_RUNTIMES = ("gevent", "eventlet")
_USAGE = "usage: python tests/green_runner.py gevent|eventlet [pytest args...]"

if len(sys.argv) < 2 or sys.argv[1] not in _RUNTIMES:
    sys.stderr.write(_USAGE + "\n")
    sys.exit(2)

RUNTIME = sys.argv[1]

if RUNTIME == "gevent":
    from gevent import monkey

    monkey.patch_all()
else:
    import eventlet

    eventlet.monkey_patch()

import inspect
import os
from typing import Any

os.environ["CONNPOOL_MONKEY_PATCHED"] = RUNTIME
os.environ["CONNPOOL_TEST_BACKENDS"] = RUNTIME
# trio cannot work here (see above): make ``import trio`` a clean ImportError,
# so that pytest.importorskip("trio") skips and connpool reports the trio
# backend as unavailable, instead of failing in the middle of a test.
sys.modules["trio"] = None  # type: ignore[assignment]
# hypothesis loads third-party plugins at import, trio's among them.
os.environ["HYPOTHESIS_NO_PLUGINS"] = "1"

import pytest


class GreenRunnerPlugin:
    """Skips async tests and reports how the process was patched."""

    def pytest_configure(self, config: pytest.Config) -> None:
        # Registered here too, so that --strict-markers accepts it when anyio's plugin is off.
        config.addinivalue_line("markers", "anyio: the test runs on an async backend (anyio plugin)")

    def pytest_report_header(self) -> str:
        return f"connpool green runner: monkey-patched by {RUNTIME}; backends: {RUNTIME}"

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        skip = pytest.mark.skip(reason=f"async test: no async runtime in a {RUNTIME}-patched process")
        for item in items:
            function: Any = getattr(item, "function", None)
            if item.get_closest_marker("anyio") is not None or inspect.iscoroutinefunction(function):
                item.add_marker(skip)


def main(argv: list[str]) -> int:
    args = ["-o", "timeout_method=signal", "-p", "no:anyio"]
    return int(pytest.main(args + argv, plugins=[GreenRunnerPlugin()]))


sys.exit(main(sys.argv[2:]))
