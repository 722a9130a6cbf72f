"""Connectors for psycopg 3: PostgreSQL connections for ``Pool`` and ``AsyncPool``.

>>> from connpool import Pool
>>> from connpool.contrib.psycopg import PsycopgConnector
>>> with Pool(PsycopgConnector("postgresql://app@db/app"), max_size=10) as pool:  # doctest: +SKIP
...     with pool.connection() as conn:
...         conn.execute("INSERT INTO hits DEFAULT VALUES")
...         conn.commit()

Hooks (what the pool calls):

``connect()``
    :meth:`psycopg.Connection.connect` with the connector's arguments
    (``autocommit=False`` unless asked otherwise), then the optional
    ``configure(conn)`` callback, which must leave the connection idle.
    ``connect_timeout`` defaults to 10 seconds (psycopg enforces it; without
    one, a connect to a black-holed host waits for the operating system's
    TCP timeout, minutes).  A failing server makes
    ``acquire`` raise ``PoolTimeout`` with the ``psycopg.OperationalError``
    as ``__cause__``; the pool keeps retrying in the background.
``check(conn)``
    run by the pool at checkout, only on a connection idle for
    ``check_after`` seconds: the connection must not be closed or broken,
    must be idle (no open transaction), and ``check_query`` (default: an
    empty query, the cheapest round trip) must succeed; it runs in
    autocommit mode so it never opens a transaction.  ``check_query=None``
    skips the round trip.
``reset(conn)``
    run when a connection comes back, according to its transaction status:
    ``IDLE``: nothing to do; ``INTRANS`` / ``INERROR``: roll back (the work
    of a caller that returned without committing is discarded, as
    psycopg_pool does); ``ACTIVE`` (a query or ``COPY`` still running) or
    ``UNKNOWN`` (a broken connection): raise, so the pool discards it.
    ``autocommit`` is then restored to the connector's setting if the user
    changed it.
``close(conn)``
    closes the connection.

``psycopg.OperationalError`` is not an ``OSError``: a connection that broke
inside ``pool.connection()`` is returned, and ``reset`` discards it (its
status is ``UNKNOWN``).  Pass ``discard_on=(OSError, psycopg.OperationalError)``
to the pool to discard it at once.

Backends: :class:`PsycopgConnector` runs on threading, and on gevent and
eventlet when they have monkey-patched the process **before psycopg was
imported**.  psycopg 3 waits for its sockets with its own wait functions,
chosen once at import: with gevent's monkey-patching it picks a
``select``-based function that gevent makes cooperative (psycopg 3.1.14+
detects gevent even with the C extension, ``psycopg[binary]``/``[c]``).
eventlet is not detected by psycopg: the pure-Python implementation then
uses eventlet's green ``select`` and is cooperative, but the C extension's
wait function blocks the whole hub; set the environment variable
``PSYCOPG_WAIT_FUNC=wait_select`` before importing psycopg (the connector
warns when it finds that combination).  Host names are resolved by libpq,
whose ``getaddrinfo`` call is not cooperative under gevent or eventlet:
give an IP address (or ``hostaddr``) to keep name resolution from blocking
the hub.

:class:`AsyncPsycopgConnector` runs on asyncio only: psycopg's
``AsyncConnection`` does not support trio, and ``connect`` raises
``RuntimeError`` saying so there.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from ._util import require_asyncio

try:
    import psycopg
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'connpool.contrib.psycopg needs psycopg 3, which is not installed: pip install "connpool[psycopg]"'
    ) from exc

__all__ = ["AsyncPsycopgConnector", "PsycopgConnector"]

logger = logging.getLogger("connpool")

_IDLE = pq.TransactionStatus.IDLE
_ROLLBACK = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


def _redact(text: str, params: dict[str, Any]) -> str:
    password = params.get("password")
    return text.replace(str(password), "***") if password else text


class _BasePsycopgConnector:
    backends: tuple[str, ...] = ()

    def __init__(
        self,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        connect_timeout: float | None = 10.0,
        check_query: str | None = "",
        configure: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str (a libpq DSN or URI), got {type(conninfo).__name__}")
        if check_query is not None and not isinstance(check_query, str):
            raise TypeError(f"check_query must be a str or None, got {type(check_query).__name__}")
        if configure is not None and not callable(configure):
            raise TypeError(f"configure must be callable or None, got {type(configure).__name__}")
        # psycopg's own options go to connect(); the rest are libpq parameters.
        self.options = {
            key: kwargs.pop(key)
            for key in ("prepare_threshold", "context", "row_factory", "cursor_factory")
            if key in kwargs
        }
        self.autocommit = bool(autocommit)
        self.check_query = check_query
        self.configure = configure
        try:
            params = conninfo_to_dict(conninfo, **kwargs)
            if "connect_timeout" not in params and connect_timeout is not None:
                if connect_timeout <= 0:
                    raise ValueError(f"connect_timeout must be greater than 0 or None, got {connect_timeout}")
                kwargs["connect_timeout"] = max(2, math.ceil(connect_timeout))  # libpq: whole seconds, >= 2
            self.conninfo = make_conninfo(conninfo, **kwargs)  # libpq validates option names here
        except psycopg.ProgrammingError as exc:
            message = _redact(str(exc).strip(), kwargs)
            raise ValueError(f"invalid PostgreSQL connection string: {message}") from None
        self._params = conninfo_to_dict(self.conninfo)

    def __repr__(self) -> str:
        params = self._params
        where = " ".join(
            f"{key}={params[key]}" for key in ("host", "hostaddr", "port", "dbname", "user") if key in params
        )
        return f"<{type(self).__name__} {where}>"

    def _after_connect(self, conn: Any) -> None:
        if conn.info.transaction_status != _IDLE:
            raise psycopg.ProgrammingError(
                f"configure() left the connection in status {conn.info.transaction_status.name}: "
                "it must commit or roll back"
            )

    def _reset_plan(self, conn: Any) -> bool:
        """Whether ``conn`` needs a rollback; raise if it cannot be reused."""
        if conn.closed or conn.broken:
            raise psycopg.OperationalError("the connection was closed or broke while checked out")
        status = conn.info.transaction_status
        if status == _IDLE:
            return False
        if status in _ROLLBACK:
            return True
        raise psycopg.OperationalError(
            f"the connection came back in transaction status {status.name} "
            "(a query or COPY still running, or a lost connection): discarding it"
        )

    def _can_check(self, conn: Any) -> bool:
        return not (conn.closed or conn.broken) and conn.info.transaction_status == _IDLE


# --------------------------------------------------------------------- sync


class PsycopgConnector(_BasePsycopgConnector):
    """Connects :class:`psycopg.Connection` objects for :class:`connpool.Pool`.

    ``conninfo`` is a libpq connection string or URI; keyword arguments are
    libpq parameters (``host``, ``dbname``, ``password``, ``sslmode``...) or
    psycopg's ``prepare_threshold``, ``row_factory``, ``cursor_factory`` and
    ``context``.  ``autocommit`` is the mode of new connections and the one
    ``reset`` restores.  ``configure(conn)``, if given, runs on each new
    connection (e.g. ``SET`` statements, type adapters) and must leave it
    idle.  ``check_query`` is what ``check`` runs (``None``: no round trip).
    A malformed connection string or an unknown parameter raises
    ``ValueError`` here, at construction.
    """

    backends = ("threading", "gevent", "eventlet")

    def __init__(
        self,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        connect_timeout: float | None = 10.0,
        check_query: str | None = "",
        configure: Callable[[psycopg.Connection[Any]], object] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            conninfo,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            check_query=check_query,
            configure=configure,
            **kwargs,
        )
        _warn_if_blocking_under_eventlet()

    def connect(self) -> psycopg.Connection[Any]:
        """Open a new connection (and run ``configure`` on it)."""
        conn: psycopg.Connection[Any] = psycopg.Connection.connect(
            self.conninfo, autocommit=self.autocommit, **self.options
        )
        try:
            if self.configure is not None:
                self.configure(conn)
            self._after_connect(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def check(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether ``conn`` is usable: open, idle, and answering ``check_query``."""
        if not self._can_check(conn):
            return False
        if self.check_query is None:
            return True
        if conn.autocommit:
            conn.execute(self.check_query)
        else:
            conn.autocommit = True
            try:
                conn.execute(self.check_query)
            finally:
                conn.autocommit = False
        return True

    def reset(self, conn: psycopg.Connection[Any]) -> None:
        """Roll back an open transaction; raise (so the pool discards ``conn``) if that is not enough."""
        if self._reset_plan(conn):
            conn.rollback()
        if conn.autocommit != self.autocommit:
            conn.autocommit = self.autocommit

    def ping(self, conn: psycopg.Connection[Any]) -> None:
        """Keepalive: run ``check_query`` (or an empty query); raise if the connection is broken."""
        if not self.check(conn):
            raise psycopg.OperationalError("the connection is closed, broken or not idle")

    def close(self, conn: psycopg.Connection[Any]) -> None:
        """Close ``conn``."""
        conn.close()


# -------------------------------------------------------------------- async


class AsyncPsycopgConnector(_BasePsycopgConnector):
    """Connects :class:`psycopg.AsyncConnection` objects for :class:`connpool.AsyncPool`.

    Same arguments and hooks as :class:`PsycopgConnector`, awaited;
    ``configure`` may be a coroutine function.  asyncio only: psycopg's
    ``AsyncConnection`` does not run on trio, and ``connect`` raises
    ``RuntimeError`` there (so ``acquire`` raises ``PoolTimeout`` with that
    error as ``__cause__``).
    """

    backends = ("asyncio",)

    def __init__(
        self,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        connect_timeout: float | None = 10.0,
        check_query: str | None = "",
        configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[object] | object] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            conninfo,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            check_query=check_query,
            configure=configure,
            **kwargs,
        )

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """Open a new connection (and run ``configure`` on it)."""
        require_asyncio("psycopg's AsyncConnection")
        conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=self.autocommit, **self.options
        )
        try:
            if self.configure is not None:
                result = self.configure(conn)
                if isinstance(result, Awaitable):
                    await result
            self._after_connect(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Whether ``conn`` is usable: open, idle, and answering ``check_query``."""
        if not self._can_check(conn):
            return False
        if self.check_query is None:
            return True
        if conn.autocommit:
            await conn.execute(self.check_query)
        else:
            await conn.set_autocommit(True)
            try:
                await conn.execute(self.check_query)
            finally:
                await conn.set_autocommit(False)
        return True

    async def reset(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Roll back an open transaction; raise (so the pool discards ``conn``) if that is not enough."""
        if self._reset_plan(conn):
            await conn.rollback()
        if conn.autocommit != self.autocommit:
            await conn.set_autocommit(self.autocommit)

    async def ping(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Keepalive: run ``check_query`` (or an empty query); raise if the connection is broken."""
        if not await self.check(conn):
            raise psycopg.OperationalError("the connection is closed, broken or not idle")

    async def close(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Close ``conn``."""
        await conn.close()


def _warn_if_blocking_under_eventlet() -> None:
    """Warn when eventlet patched the process but psycopg waits with its C, hub-blocking function."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is None or not patcher.is_monkey_patched("select"):
        return
    import psycopg.waiting

    wait_c = getattr(psycopg.waiting, "wait_c", None)
    if wait_c is not None and psycopg.waiting.wait is wait_c:
        warnings.warn(
            "psycopg uses its C wait function, which blocks eventlet's hub: set "
            "PSYCOPG_WAIT_FUNC=wait_select in the environment before psycopg is imported",
            RuntimeWarning,
            stacklevel=3,
        )
