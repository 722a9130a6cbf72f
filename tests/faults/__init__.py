"""Fault injection for the test suite: a controllable TCP proxy and an echo server.

    from faults import EchoServer, FaultProxy

Both run in real OS threads of their own with raw sockets, so they behave the
same whatever runtime the test uses (threading, gevent, eventlet -- patched
or not --, asyncio, trio).  See ``proxy.py`` for the modes.
"""

from __future__ import annotations

from ._loop import LoopError
from .echo import EchoServer
from .proxy import FaultProxy, Mode

__all__ = ["EchoServer", "FaultProxy", "LoopError", "Mode"]
