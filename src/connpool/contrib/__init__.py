"""Ready-made connectors for popular client libraries.

Each module wraps one client library; importing it imports that library, so
the modules are not imported by ``connpool.contrib`` itself:

* :mod:`connpool.contrib.redis` -- ``RedisConnector`` and ``AsyncRedisConnector``
  for redis-py (``pip install "connpool[redis]"``);
* :mod:`connpool.contrib.psycopg` -- ``PsycopgConnector`` and
  ``AsyncPsycopgConnector`` for psycopg 3 (``pip install "connpool[psycopg]"``).

A connector is an object with ``connect``, ``close``, ``check`` and ``reset``
methods: pass it as the ``connect`` argument of :class:`connpool.Pool` (the
sync connectors) or :class:`connpool.AsyncPool` (the async ones) and the pool
uses its methods as hooks.  Each connector class lists the backends it runs
on in its ``backends`` attribute.
"""

from __future__ import annotations

__all__: list[str] = []
