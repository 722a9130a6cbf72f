"""connpool: one connection pool for threading, gevent, eventlet, asyncio and trio.

``Pool`` serves blocking code (threading, gevent, eventlet), ``AsyncPool``
serves asyncio and trio; both drive the same pure pool core.  The scheduler
layer they run on is public: :mod:`connpool.backends`.
"""

from __future__ import annotations

from ._async import AsyncPool
from ._errors import PoolClosed, PoolError, PoolTimeout, TooManyWaiters
from ._proxy import Proxy
from ._retry import retry
from ._stats import PoolStats
from ._sync import Pool

__all__ = [
    "AsyncPool",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolTimeout",
    "Proxy",
    "TooManyWaiters",
    "retry",
]

__version__ = "0.1.0.dev0"
