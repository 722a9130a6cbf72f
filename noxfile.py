"""How connpool is tested, linted and type-checked: ``pip install nox uv && nox``.

Every runtime gets a process of its own.  ``tests`` runs the whole suite on
threading, asyncio and trio (the default backends of ``tests/conftest.py``) on
each supported Python.  gevent and eventlet run once unpatched
(``CONNPOOL_TEST_BACKENDS=<name>``) and once monkey-patched before anything
else is imported (``tests/green_runner.py``); the two never share a process.

    nox                          # the default sessions below (what CI runs)
    nox -s tests-3.12            # one session
    nox -s tests_gevent -- -x -k lifetime      # arguments after -- go to pytest
    nox -s demo                  # the embedded echo server and a pooled client per backend
    nox -s bench                 # connpool against other pools (not a default session)
    nox -R ...                   # reuse the environments, skip installs (fast iteration)
"""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "uv"
nox.options.sessions = [
    "tests",
    "tests_gevent",
    "tests_gevent_patched",
    "tests_eventlet",
    "tests_eventlet_patched",
    "lint",
    "typing",
]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
MAIN_PYTHON = "3.11"
PYPROJECT = nox.project.load_toml("pyproject.toml")
ALL_EXTRAS = ".[gevent,eventlet,trio,redis,psycopg,plot]"
LINTED = ["src", "tests", "benchmarks", "noxfile.py"]


def install(session: nox.Session, target: str, *groups: str) -> None:
    """Install the project (editable, with ``target``'s extras) and dependency groups of pyproject.toml."""
    session.install("-e", target, *nox.project.dependency_groups(PYPROJECT, *groups))


def pytest(session: nox.Session, *runner: str, env: dict[str, str] | None = None) -> None:
    """Run pytest (through ``runner`` when given) on ``tests``, or on what follows ``--``."""
    args = session.posargs or ["tests"]
    command = [*runner, *args] if runner else ["pytest", *args]
    session.run(*command, env=env or {})


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite on threading, asyncio and trio."""
    install(session, ALL_EXTRAS, "test", "bench")  # bench: the benchmark suite's smoke test
    pytest(session)


@nox.session(python=MAIN_PYTHON)
def tests_gevent(session: nox.Session) -> None:
    """The suite on gevent, in a process that is not monkey-patched."""
    install(session, ALL_EXTRAS, "test")
    pytest(session, env={"CONNPOOL_TEST_BACKENDS": "gevent"})


@nox.session(python=MAIN_PYTHON)
def tests_gevent_patched(session: nox.Session) -> None:
    """The suite on gevent, after gevent.monkey.patch_all()."""
    install(session, ALL_EXTRAS, "test")
    pytest(session, "python", "tests/green_runner.py", "gevent")


@nox.session(python=MAIN_PYTHON)
def tests_eventlet(session: nox.Session) -> None:
    """The suite on eventlet, in a process that is not monkey-patched."""
    install(session, ALL_EXTRAS, "test")
    pytest(session, env={"CONNPOOL_TEST_BACKENDS": "eventlet"})


@nox.session(python=MAIN_PYTHON)
def tests_eventlet_patched(session: nox.Session) -> None:
    """The suite on eventlet, after eventlet.monkey_patch() (async tests skip)."""
    install(session, ALL_EXTRAS, "test")
    pytest(session, "python", "tests/green_runner.py", "eventlet")


@nox.session(python=MAIN_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session(python=MAIN_PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict (configured in pyproject.toml)."""
    install(session, ".", "typing")
    session.run("mypy", *session.posargs)


@nox.session(python=MAIN_PYTHON)
def demo(session: nox.Session) -> None:
    """The demo: an embedded echo server and a pooled client on every installed backend."""
    session.install("-e", ".[gevent,eventlet,trio]")
    session.run("connpool", "bench", "--duration", "1", *session.posargs)


@nox.session(python=MAIN_PYTHON)
def bench(session: nox.Session) -> None:
    """connpool side by side with other pools, each runtime in its own process (see benchmarks/)."""
    install(session, ALL_EXTRAS, "bench")
    session.run("python", "benchmarks/run.py", *(session.posargs or ["--runtime", "all"]))
