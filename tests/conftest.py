"""Test plumbing shared by the whole suite.

Which runtimes a test process covers is decided once, by the environment:

``CONNPOOL_TEST_BACKENDS``
    comma-separated backend names this process runs the parametrized tests on.
    Default: ``threading,asyncio,trio`` (gevent and eventlet each get a process
    of their own, see ``noxfile.py`` and ``tests/green_runner.py``).
``CONNPOOL_MONKEY_PATCHED``
    set by ``tests/green_runner.py`` to ``gevent`` or ``eventlet`` when the
    process was monkey-patched before anything else was imported.
``CONNPOOL_REQUIRE_SERVICES``
    when set (CI does), tests that need PostgreSQL or Redis fail instead of
    skipping when the server cannot be reached.

Sync tests take the ``sched`` fixture (a SyncScheduler, once per enabled sync
backend).  Async tests are marked ``@pytest.mark.anyio`` and take ``asched``
(the AsyncScheduler matching the running ``anyio_backend``).
"""

from __future__ import annotations

from typing import Any

import pytest

from connpool.backends import AsyncScheduler, SyncScheduler, get_backend
from testenv import ASYNC_ENABLED, ENABLED, MONKEY_PATCHED, REQUIRE_SERVICES, SYNC_ENABLED, skip_or_fail

__all__ = ["ENABLED", "MONKEY_PATCHED", "REQUIRE_SERVICES", "skip_or_fail"]


def _params(names: list[str]) -> list[Any]:
    return [pytest.param(name, id=name) for name in names] or [
        pytest.param(None, marks=pytest.mark.skip(reason="no backend of this family enabled in this process"))
    ]


@pytest.fixture(params=_params(SYNC_ENABLED))
def sync_backend(request: pytest.FixtureRequest) -> str:
    """Name of a sync backend enabled in this process."""
    return str(request.param)


@pytest.fixture
def sched(sync_backend: str) -> SyncScheduler:
    """The SyncScheduler of ``sync_backend``."""
    scheduler = get_backend(sync_backend)
    assert isinstance(scheduler, SyncScheduler)
    return scheduler


@pytest.fixture(params=_params(ASYNC_ENABLED))
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Overrides anyio's fixture: async tests run on the enabled async backends."""
    return str(request.param)


@pytest.fixture
def asched(anyio_backend: str) -> AsyncScheduler:
    """The AsyncScheduler of the running async backend."""
    scheduler = get_backend(anyio_backend)
    assert isinstance(scheduler, AsyncScheduler)
    return scheduler
