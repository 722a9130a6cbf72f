"""Bad input is refused at construction with a clear error; pools bind to no loop early."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from connpool import AsyncPool, Pool, PoolClosed

from .helpers import Factory


def conn_factory():
    return object()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_size": 0}, ValueError, "max_size must be at least 1"),
        ({"max_size": 2.5}, TypeError, "max_size must be an int"),
        ({"min_size": -1}, ValueError, "min_size must be 0 or more"),
        ({"min_size": 5, "max_size": 2}, ValueError, r"min_size \(5\) must not exceed max_size \(2\)"),
        (
            {"burst_limit": 5, "max_size": 10},
            ValueError,
            r"burst_limit \(5\) must be None or at least max_size",
        ),
        ({"timeout": -1}, ValueError, "timeout must be at least 0"),
        ({"timeout": "soon"}, TypeError, "timeout must be a number"),
        ({"check_after": -0.5}, ValueError, "check_after must be at least 0"),
        ({"max_lifetime": 0}, ValueError, "max_lifetime must be greater than 0"),
        ({"connect_timeout": -3}, ValueError, "connect_timeout must be greater than 0"),
        ({"max_waiting": -1}, ValueError, "max_waiting must be at least 0"),
        ({"max_uses": 0}, ValueError, "max_uses must be at least 1"),
        ({"discard_on": ("OSError",)}, TypeError, "discard_on must be a tuple of exception classes"),
        ({"check": 42}, TypeError, "check must be callable"),
        ({"name": 3}, TypeError, "name must be a str"),
        ({"reconnect_failed": "page me"}, TypeError, "reconnect_failed must be callable or None"),
        ({"reconnect_timeout": -1}, ValueError, "reconnect_timeout must be at least 0"),
        ({"reconnect_timeout": None}, TypeError, "reconnect_timeout must be a number"),
        ({"backend": "tornado"}, LookupError, "unknown backend 'tornado'"),
        ({"backend": "asyncio"}, ValueError, "use AsyncPool"),
        ({"backend": object()}, TypeError, "backend must be a backend name"),
    ],
)
def test_sync_pool_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        Pool(conn_factory, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_size": 0}, ValueError, "max_size"),
        ({"min_size": 3, "max_size": 1}, ValueError, "min_size"),
        ({"burst_limit": 1, "max_size": 2}, ValueError, "burst_limit"),
        ({"timeout": -0.1}, ValueError, "timeout"),
        ({"backend": "gevent"}, ValueError, "use Pool"),
        ({"backend": "threading"}, ValueError, "use Pool"),
        ({"backend": "nope"}, LookupError, "unknown backend"),
        ({"checkpoint": "yes"}, TypeError, "checkpoint"),
    ],
)
def test_async_pool_rejects_bad_input(kwargs, error, match):
    async def aconnect():
        return object()

    with pytest.raises(error, match=match):
        AsyncPool(aconnect, **kwargs)


def test_connect_must_be_callable():
    with pytest.raises(TypeError, match="connect must be a callable"):
        Pool(42)  # type: ignore[arg-type]


def test_missing_extra_names_it():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["gevent"] = None
        from connpool import Pool
        try:
            Pool(object, backend="gevent")
        except ImportError as exc:
            assert isinstance(exc, LookupError)
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "connpool[gevent]"' in out


def test_closed_pool_refuses_use():
    pool = Pool(conn_factory, backend="threading")
    pool.close()
    assert pool.closed
    with pytest.raises(PoolClosed):
        pool.acquire()
    with pytest.raises(PoolClosed):
        pool.open()


# a pool built at import time, outside any event loop
MODULE_POOL = AsyncPool(Factory().aconnect, max_size=2)


def test_async_pool_binds_no_loop_at_construction():
    async def main():
        async with MODULE_POOL.connection() as conn:
            assert conn is not None
        await MODULE_POOL.close()
        return MODULE_POOL.backend

    assert asyncio.run(main()) == "asyncio"
    # and a fresh pool built here, outside a loop, works in a second, different loop
    pool = AsyncPool(Factory().aconnect, backend="asyncio")

    async def again():
        async with pool:
            async with pool.connection():
                pass

    asyncio.run(again())


def test_async_pool_on_trio_built_outside_trio_run():
    trio = pytest.importorskip("trio")
    pool = AsyncPool(Factory().aconnect, backend="auto")

    async def main():
        async with pool:
            async with pool.connection() as conn:
                assert conn is not None
        return pool.backend

    assert trio.run(main) == "trio"


def test_trio_pool_without_async_with_says_so():
    trio = pytest.importorskip("trio")

    async def main():
        pool = AsyncPool(Factory().aconnect, backend="trio")
        with pytest.raises(RuntimeError, match="async with"):
            await pool.acquire()

    trio.run(main)


def test_detect_async_backend_outside_loop():
    from connpool.backends import detect_async_backend

    with pytest.raises(RuntimeError, match="running asyncio or trio loop"):
        detect_async_backend()
