"""Which runtimes and services this test process covers (read once from the environment).

Importable from any test module as ``testenv`` (``tests/`` is on ``sys.path``);
``conftest.py`` builds its fixtures from it.  See ``conftest.py`` for the variables.
"""

from __future__ import annotations

import os

import pytest

from connpool.backends import ASYNC_BACKENDS, SYNC_BACKENDS

_DEFAULT = "threading,asyncio,trio"
ENABLED: list[str] = [
    name.strip() for name in os.environ.get("CONNPOOL_TEST_BACKENDS", _DEFAULT).split(",") if name.strip()
]
SYNC_ENABLED = [name for name in ENABLED if name in SYNC_BACKENDS]
ASYNC_ENABLED = [name for name in ENABLED if name in ASYNC_BACKENDS]
MONKEY_PATCHED = os.environ.get("CONNPOOL_MONKEY_PATCHED", "")
REQUIRE_SERVICES = bool(os.environ.get("CONNPOOL_REQUIRE_SERVICES"))


def skip_or_fail(reason: str) -> None:
    """Skip a test whose server is missing, or fail it where services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)
