"""The backend registry: lookup by name, lazy imports, helpful errors.

Anything that depends on what the process has imported or patched runs in a
fresh interpreter, so these tests hold in patched and unpatched test runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connpool.backends import (
    ASYNC_BACKENDS,
    SYNC_BACKENDS,
    AsyncScheduler,
    SyncScheduler,
    available_backends,
    get_backend,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")
OPTIONAL = ("gevent", "eventlet", "trio")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that sees this checkout's ``connpool``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONNPOOL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def run_json(code: str) -> object:
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_unknown_backend_raises_lookup_error_naming_the_choices() -> None:
    with pytest.raises(LookupError) as info:
        get_backend("twisted")
    message = str(info.value)
    assert "twisted" in message
    for name in (*SYNC_BACKENDS, *ASYNC_BACKENDS):
        assert repr(name) in message


def test_available_backends_lists_the_installed_ones() -> None:
    names = available_backends()
    assert "threading" in names
    assert "asyncio" in names
    for name in OPTIONAL:
        assert (name in names) == (importlib.util.find_spec(name) is not None)
    assert set(names) <= {*SYNC_BACKENDS, *ASYNC_BACKENDS}


@pytest.mark.parametrize("name", ["threading", "asyncio"])
def test_get_backend_returns_the_same_instance(name: str) -> None:
    first = get_backend(name)
    assert get_backend(name) is first
    assert first.name == name


def test_get_backend_families() -> None:
    assert isinstance(get_backend("threading"), SyncScheduler)
    assert isinstance(get_backend("asyncio"), AsyncScheduler)


def test_every_installed_backend_loads_with_the_right_family() -> None:
    result = run_json(
        "import json\n"
        "from connpool.backends import SYNC_BACKENDS, available_backends, get_backend\n"
        "out = {}\n"
        "for name in available_backends():\n"
        "    b = get_backend(name)\n"
        "    assert b is get_backend(name)\n"
        "    out[name] = [b.name, b.family]\n"
        "print(json.dumps(out))\n"
    )
    assert isinstance(result, dict)
    for name, (reported, family) in result.items():
        assert reported == name
        assert family == ("sync" if name in SYNC_BACKENDS else "async")


def test_detect_sync_backend_is_threading_when_unpatched() -> None:
    proc = run_python("from connpool.backends import detect_sync_backend; print(detect_sync_backend())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "threading"


def test_importing_connpool_imports_no_optional_runtime() -> None:
    loaded = run_json(
        "import json, sys\n"
        "import connpool, connpool.backends\n"
        "from connpool.backends import get_backend\n"
        "get_backend('threading'); get_backend('asyncio')\n"
        "print(json.dumps(sorted(m for m in ('gevent', 'eventlet', 'trio', 'anyio', 'greenlet')"
        " if m in sys.modules)))\n"
    )
    assert loaded == []


@pytest.mark.parametrize("name", OPTIONAL)
def test_missing_library_names_the_extra_to_install(name: str) -> None:
    # sys.modules[name] = None is how Python marks a module as unimportable:
    # importlib.util.find_spec() then reports it missing, as if not installed.
    result = run_json(
        "import json, sys\n"
        f"sys.modules[{name!r}] = None\n"
        "from connpool.backends import available_backends, get_backend\n"
        "try:\n"
        f"    get_backend({name!r})\n"
        "except ImportError as exc:\n"
        "    print(json.dumps([str(exc), available_backends()]))\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    assert result is not None, "get_backend did not raise ImportError"
    assert isinstance(result, list)
    message, available = result
    assert f'pip install "connpool[{name}]"' in message
    assert name not in available
    assert "threading" in available
