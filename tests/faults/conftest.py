"""Fixtures of the fault scenarios: an echo server, a fault proxy in front of it, a connect log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .echo import EchoServer
from .proxy import FaultProxy
from .scenario_helpers import ConnectLog


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(*echo.address) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def log() -> ConnectLog:
    """What the pool's tracking connector opened."""
    return ConnectLog()
