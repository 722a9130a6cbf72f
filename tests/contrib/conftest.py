"""Fixtures for the connector tests: the local Redis and PostgreSQL, private servers to restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import PrivatePostgres, PrivateRedis, pg_dsn, redis_url


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """URL of the shared local Redis (the test is skipped, or fails in CI, without one)."""
    return redis_url()


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """DSN of the shared local PostgreSQL (skip, or fail in CI, without one)."""
    return pg_dsn()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, running; killed at the end."""
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def private_pg_cluster() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the session's own (initdb runs once); removed at the end."""
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_pg(private_pg_cluster: PrivatePostgres) -> PrivatePostgres:
    """The session's private PostgreSQL, running (started again if an earlier test left it stopped)."""
    if not private_pg_cluster.running:
        private_pg_cluster.start()
    return private_pg_cluster
