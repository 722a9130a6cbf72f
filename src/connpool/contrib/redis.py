"""Connectors for redis-py: one pooled client = one Redis connection.

>>> from connpool import Pool
>>> from connpool.contrib.redis import RedisConnector
>>> with Pool(RedisConnector("redis://127.0.0.1:6379/0"), max_size=10) as pool:  # doctest: +SKIP
...     with pool.connection() as r:
...         r.incr("hits")

Each object the pool hands out is a :class:`redis.Redis` client (a
:class:`redis.asyncio.Redis` for :class:`AsyncRedisConnector`) that owns
exactly **one** socket.  redis-py's ``single_connection_client=True`` alone
is not enough for that: ``pipeline()``, ``pubsub()`` and ``monitor()``
borrow further connections from the client's internal redis-py pool, which would
leave up to two sockets per pooled client and make ``max_size`` a lie.  The
connectors therefore give each client a private redis-py pool that holds one
connection and hands that same connection to every caller: commands,
pipelines and pub/sub all share the pooled client's socket, which is safe
because a pooled client is used by one thread, greenlet or task at a time.

Hooks (what the pool calls):

``connect()``
    builds the client and opens its connection (the handshake -- ``HELLO``,
    ``AUTH``, ``SELECT`` -- runs here, so a wrong password or an unreachable
    server fails the connect, and ``acquire`` raises ``PoolTimeout`` with
    that error as ``__cause__``).
``check(client)``
    run by the pool at checkout, only on a client idle for ``check_after``
    seconds: the socket must still be open, must not have unread bytes (a
    peer close or out-of-sync replies), and a ``PING`` must get ``PONG``
    (``check_ping=False`` skips the round trip).
``reset(client)``
    run when a client comes back, without a round trip: a client whose
    socket was closed by redis-py after an error, or that has unread data
    (an abandoned reply, pub/sub messages), or that a ``PubSub`` object
    still uses, is discarded.  (Closing a ``PubSub`` closes the socket
    too -- redis-py's doing -- so a client used for pub/sub is replaced
    on return unless it ran a command after that, which reconnects it.)  Server-side
    session state that leaves no bytes on the wire -- a raw ``MULTI``,
    ``WATCH``, ``SELECT``, ``SUBSCRIBE`` or ``CLIENT TRACKING`` -- is only
    cleared with ``full_reset=True``, which sends ``RESET`` (Redis 6.2+)
    and redoes the handshake (two round trips per return).
``close(client)``
    closes the client and its socket.

redis-py's own retries are off by default (they are a per-connection
setting: pass ``retry=`` to turn them on); the pool replaces a broken
connection instead.  The ``redis.ConnectionError`` a broken connection
raises inside ``pool.connection()`` is not an ``OSError``, so the pool
returns the client, and ``reset`` then discards it because its socket is
gone.  To discard at once, add it to the pool's ``discard_on``::

    Pool(RedisConnector(url), discard_on=(OSError, redis.ConnectionError, redis.TimeoutError))

Backends: :class:`RedisConnector` runs on threading, gevent and eventlet
(redis-py uses the ``socket`` module, which gevent and eventlet make
cooperative when they monkey-patch it); :class:`AsyncRedisConnector` runs on
asyncio only -- redis-py's asyncio client does not support trio, and
connecting from trio raises ``RuntimeError`` saying so.
"""

from __future__ import annotations

import weakref
from typing import Any

from ._util import require_asyncio

try:
    import redis
    import redis.asyncio
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'connpool.contrib.redis needs redis-py, which is not installed: pip install "connpool[redis]"'
    ) from exc

__all__ = ["AsyncRedisConnector", "RedisConnector"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


# ------------------------------------------------------------------ helpers


def _is_connected(connection: Any) -> bool:
    """Whether a redis-py connection (sync or asyncio) has an open socket."""
    state = getattr(connection, "is_connected", None)
    if isinstance(state, bool):
        return state
    if hasattr(connection, "_writer"):  # asyncio connections of old redis-py versions
        return getattr(connection, "_writer", None) is not None
    return getattr(connection, "_sock", None) is not None


def _pubsub_attached(connection: Any) -> bool:
    """Whether a live ``PubSub`` (or another user of reconnect callbacks) still uses ``connection``.

    redis-py's ``PubSub`` registers a reconnect callback (a weak method) on the
    connection it subscribes on and removes it when closed; closing also
    disconnects the socket.  A pooled client returned with one attached is
    still subscribed, and its next user would read pushes instead of replies.
    """
    for callback in getattr(connection, "_connect_callbacks", ()):
        target = callback() if isinstance(callback, weakref.ref) else callback
        if target is not None:
            return True
    return False


def _text(reply: Any) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _redacted(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}"


def _check_url(url: Any) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str such as {DEFAULT_URL!r}, got {type(url).__name__}")
    return url


class _OneConnectionPool(redis.ConnectionPool):
    """A redis-py pool holding one connection, handed to every caller.

    The client gets it at construction (``single_connection_client=True``);
    pipelines and pub/sub objects made from the client get the same one
    (reconnected first if redis-py dropped it), and giving it back does
    nothing: the connection lives as long as the client.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs["max_connections"] = 1
        super().__init__(**kwargs)
        self._the_connection: Any = None

    def get_connection(self, *args: Any, **options: Any) -> Any:
        connection = self._the_connection
        if connection is None:
            base: Any = super()  # redis-py's annotations vary between versions
            connection = base.get_connection(*args, **options)
            self._the_connection = connection
        else:
            connection.connect()  # no-op when connected; reconnects after a drop
        return connection

    def release(self, connection: Any) -> None:
        if connection is not self._the_connection:
            super().release(connection)


class _AsyncOneConnectionPool(redis.asyncio.ConnectionPool):
    """:class:`_OneConnectionPool` for :mod:`redis.asyncio`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["max_connections"] = 1
        super().__init__(**kwargs)
        self._the_connection: Any = None

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        connection = self._the_connection
        if connection is None:
            base: Any = super()
            connection = await base.get_connection(*args, **options)
            self._the_connection = connection
        else:
            await connection.connect()
        return connection

    async def release(self, connection: Any) -> None:
        if connection is not self._the_connection:
            await super().release(connection)


class _BaseRedisConnector:
    backends: tuple[str, ...] = ()

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        check_ping: bool = True,
        full_reset: bool = False,
        socket_connect_timeout: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        self.url = _check_url(url)
        self.check_ping = bool(check_ping)
        self.full_reset = bool(full_reset)
        kwargs["socket_connect_timeout"] = socket_connect_timeout
        kwargs.pop("single_connection_client", None)
        self.kwargs = kwargs
        # Parse now, so a bad URL or argument fails at pool construction with
        # a clear message, not in every background connect.
        try:
            pool = self._make_pool()
            pool.connection_class(**pool.connection_kwargs)  # unknown options fail here (no I/O)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"invalid Redis URL or option for {_redacted(self.url)!r}: {exc}") from exc

    def _make_pool(self) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {_redacted(self.url)}>"


# --------------------------------------------------------------------- sync


class RedisConnector(_BaseRedisConnector):
    """Connects :class:`redis.Redis` clients of one socket each, for :class:`connpool.Pool`.

    ``url`` is a redis-py URL (``redis://``, ``rediss://`` for TLS,
    ``unix://``); other keyword arguments are those of
    :meth:`redis.ConnectionPool.from_url` and :class:`redis.Connection`
    (``password``, ``decode_responses``, ``socket_timeout``, ``protocol``,
    ``retry``...).  ``socket_connect_timeout`` defaults to 10 seconds.
    ``check_ping`` and ``full_reset`` tune the ``check`` and ``reset`` hooks
    (see the module documentation).  A malformed URL raises ``ValueError``
    and an unknown option ``TypeError`` here, at construction.
    """

    backends = ("threading", "gevent", "eventlet")

    def _make_pool(self) -> _OneConnectionPool:
        return _OneConnectionPool.from_url(self.url, **self.kwargs)

    def connect(self) -> redis.Redis:
        """Open a new client and its one connection (handshake included)."""
        pool = self._make_pool()
        try:
            return redis.Redis(connection_pool=pool, single_connection_client=True)
        except BaseException:
            pool.disconnect()
            raise

    def check(self, client: redis.Redis) -> bool:
        """Whether ``client``'s connection is still usable (see the module documentation)."""
        connection: Any = client.connection
        if connection is None or not _is_connected(connection):
            return False
        if connection.can_read(timeout=0):
            return False  # unsolicited bytes or EOF: out of sync or closed by the server
        if self.check_ping:
            connection.send_command("PING", check_health=False)
            return _text(connection.read_response()) == "PONG"
        return True

    def ping(self, client: redis.Redis) -> None:
        """Keepalive: a ``PING`` round trip; raises if the connection is broken."""
        client.ping()

    def reset(self, client: redis.Redis) -> None:
        """Make a returned client reusable, or raise so the pool discards it."""
        connection: Any = client.connection
        if connection is None or not _is_connected(connection):
            raise redis.ConnectionError("the connection was closed while checked out")
        if connection.can_read(timeout=0):
            raise redis.ConnectionError("the connection has unread data (an unfinished reply or push)")
        if _pubsub_attached(connection):
            raise redis.ConnectionError(
                "a PubSub object still uses the connection (close it before returning)"
            )
        if self.full_reset:
            connection.send_command("RESET", check_health=False)
            reply = _text(connection.read_response())
            if reply != "RESET":
                raise redis.ResponseError(f"unexpected reply to RESET: {reply!r}")
            connection.on_connect()  # RESET drops AUTH, SELECT and the protocol: redo the handshake

    def close(self, client: redis.Redis) -> None:
        """Close ``client`` and its socket."""
        pool = client.connection_pool
        try:
            client.close()
        finally:
            pool.disconnect()


# -------------------------------------------------------------------- async


class AsyncRedisConnector(_BaseRedisConnector):
    """Connects :class:`redis.asyncio.Redis` clients of one socket each, for :class:`connpool.AsyncPool`.

    Same arguments and hooks as :class:`RedisConnector`, awaited.  asyncio
    only: redis-py's asyncio client does not run on trio, and ``connect``
    raises ``RuntimeError`` there (so ``acquire`` raises ``PoolTimeout``
    with that error as ``__cause__``).  Use ``AsyncPool(...,
    backend="asyncio")`` or run the pool under asyncio.
    """

    backends = ("asyncio",)

    def _make_pool(self) -> _AsyncOneConnectionPool:
        return _AsyncOneConnectionPool.from_url(self.url, **self.kwargs)

    async def connect(self) -> redis.asyncio.Redis:
        """Open a new client and its one connection (handshake included)."""
        require_asyncio("redis-py's asyncio client (redis.asyncio)")
        pool = self._make_pool()
        try:
            client = redis.asyncio.Redis(connection_pool=pool, single_connection_client=True)
            return await client.initialize()
        except BaseException:
            await pool.disconnect()
            raise

    async def check(self, client: redis.asyncio.Redis) -> bool:
        """Whether ``client``'s connection is still usable (see the module documentation)."""
        connection: Any = client.connection
        if connection is None or not _is_connected(connection):
            return False
        if await connection.can_read():
            return False  # unsolicited bytes or EOF: out of sync or closed by the server
        if self.check_ping:
            await connection.send_command("PING", check_health=False)
            return _text(await connection.read_response()) == "PONG"
        return True

    async def ping(self, client: redis.asyncio.Redis) -> None:
        """Keepalive: a ``PING`` round trip; raises if the connection is broken."""
        await client.ping()

    async def reset(self, client: redis.asyncio.Redis) -> None:
        """Make a returned client reusable, or raise so the pool discards it."""
        connection: Any = client.connection
        if connection is None or not _is_connected(connection):
            raise redis.ConnectionError("the connection was closed while checked out")
        if await connection.can_read():
            raise redis.ConnectionError("the connection has unread data (an unfinished reply or push)")
        if _pubsub_attached(connection):
            raise redis.ConnectionError(
                "a PubSub object still uses the connection (close it before returning)"
            )
        if self.full_reset:
            await connection.send_command("RESET", check_health=False)
            reply = _text(await connection.read_response())
            if reply != "RESET":
                raise redis.ResponseError(f"unexpected reply to RESET: {reply!r}")
            await connection.on_connect()

    async def close(self, client: redis.asyncio.Redis) -> None:
        """Close ``client`` and its socket."""
        pool = client.connection_pool
        try:
            await client.aclose()
        finally:
            await pool.disconnect()
