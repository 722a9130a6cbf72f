"""What the benchmark talks to: ``tcp://`` echo servers, ``redis://`` and ``postgresql://`` servers.

A :class:`Target` is parsed and checked in the parent process (bad scheme,
missing library, unreachable server) so the user gets one clear line before
any backend starts.  The child processes then build their workload from it:
a ``connect`` for the pool and a ``cycle`` run on each checked-out connection
(send the payload and read the echo; ``PING``; ``SELECT 1``).  Redis and
PostgreSQL connections come from :mod:`connpool.contrib`'s connectors, the way
users would build such pools.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._errors import USAGE, CLIError

__all__ = [
    "Target",
    "async_workload",
    "one_line",
    "parse_target",
    "probe",
    "sync_workload",
    "unsupported_reason",
]

#: URL scheme -> kind of target
_SCHEMES = {
    "tcp": "tcp",
    "redis": "redis",
    "rediss": "redis",
    "postgresql": "postgresql",
    "postgres": "postgresql",
}

#: kind -> (module needed, extra that installs it, what to call it)
_LIBRARIES = {
    "redis": ("redis", "redis", "redis-py"),
    "postgresql": ("psycopg", "psycopg", "psycopg (3)"),
}

#: (kind, backend) pairs that cannot work, and why
_UNSUPPORTED = {
    ("redis", "trio"): "redis-py has no trio support",
    ("postgresql", "trio"): "psycopg's async connections run on asyncio only",
}

_FORMS = (
    "tcp://HOST:PORT (an echo server), redis://HOST[:PORT][/DB] or postgresql://[USER@]HOST[:PORT]/DBNAME"
)


@dataclass(frozen=True)
class Target:
    """A server to measure."""

    kind: str  #: "tcp", "redis" or "postgresql"
    url: str  #: the URL as given (used to connect)
    host: str = ""
    port: int = 0
    embedded: bool = False  #: the echo server this command started itself

    @property
    def display(self) -> str:
        """The URL with any password masked, for output."""
        return mask_password(self.url)


def mask_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _installed(module: str) -> bool:
    if module in sys.modules and sys.modules[module] is None:  # blocked on purpose
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def parse_target(text: str) -> Target:
    """Parse ``--target``; raise a usage :class:`CLIError` for a malformed URL or a missing library."""
    if "://" not in text:
        raise CLIError(
            f"--target must be a URL such as tcp://127.0.0.1:7000, got {text!r}; use {_FORMS}", USAGE
        )
    parts = urlsplit(text)
    kind = _SCHEMES.get(parts.scheme.lower())
    if kind is None:
        raise CLIError(
            f"unsupported target scheme {parts.scheme!r} in {mask_password(text)!r}; use {_FORMS}", USAGE
        )
    try:
        port = parts.port
    except ValueError:
        raise CLIError(f"bad port in target {mask_password(text)!r}", USAGE) from None
    host = parts.hostname or ""
    if kind == "tcp":
        if not host or port is None or port == 0:
            raise CLIError(f"a tcp:// target needs a host and a port (tcp://HOST:PORT), got {text!r}", USAGE)
    else:
        module, extra, name = _LIBRARIES[kind]
        if not _installed(module):
            raise CLIError(
                f"{parts.scheme}:// targets need {name}, which is not installed: "
                f'pip install "connpool[{extra}]"',
                USAGE,
            )
    return Target(kind, text, host, port or 0)


def unsupported_reason(target: Target, backend: str) -> str | None:
    """Why ``backend`` cannot drive ``target``, or ``None`` when it can."""
    return _UNSUPPORTED.get((target.kind, backend))


def one_line(exc: BaseException) -> str:
    """An exception as one line of text, with its cause when that adds something."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None:
        extra = " ".join(str(cause).split()) or type(cause).__name__
        if extra not in text:
            text = f"{text} ({extra})"
    return text


# -------------------------------------------------------------- the probe


def probe(target: Target, payload: bytes, timeout: float) -> None:
    """One connection and one cycle from the parent process; :class:`CLIError` if the target fails."""
    try:
        if target.kind == "tcp":
            _probe_tcp(target, payload, timeout)
        elif target.kind == "redis":
            import redis

            client = redis.Redis.from_url(
                target.url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                single_connection_client=True,
            )
            try:
                client.ping()
            finally:
                client.close()
        else:
            import psycopg

            with psycopg.connect(
                target.url, autocommit=True, connect_timeout=max(1, math.ceil(timeout))
            ) as conn:
                conn.execute("SELECT 1").fetchone()
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError(f"cannot reach {target.display}: {one_line(exc)}") from exc


def _probe_tcp(target: Target, payload: bytes, timeout: float) -> None:
    from ..net import connect_tcp

    with connect_tcp(target.host, target.port, timeout=timeout, backend="threading") as stream:
        stream.socket.settimeout(timeout)
        received = b""
        try:
            stream.send_all(payload)
            while len(received) < len(payload):
                chunk = stream.receive(len(payload) - len(received))
                if not chunk:
                    break
                received += chunk
        except ConnectionError as exc:
            raise CLIError(
                f"{target.display} broke the connection instead of echoing ({one_line(exc)}): "
                "a tcp:// target must be an echo server"
            ) from None
        except TimeoutError:
            raise CLIError(
                f"{target.display} sent nothing back within {timeout:g} s: "
                "a tcp:// target must be an echo server"
            ) from None
        if received != payload:
            raise CLIError(
                f"{target.display} did not echo the payload back"
                f"{' (it closed the connection)' if len(received) < len(payload) else ''}: "
                "a tcp:// target must be an echo server"
            )


# ------------------------------------------------------------ workloads


@dataclass
class SyncWorkload:
    """What a sync child gives its ``Pool``, and what each worker does per cycle."""

    connect: Any  #: a callable or a connector object
    cycle: Callable[[Any], None]
    close: Callable[[Any], object] | None = None


@dataclass
class AsyncWorkload:
    """The async twin of :class:`SyncWorkload`."""

    connect: Any
    cycle: Callable[[Any], Awaitable[None]]
    close: Callable[[Any], Any] | None = None


def sync_workload(target: Target, backend: str, payload: bytes, timeout: float) -> SyncWorkload:
    """The workload for a ``Pool`` on ``backend`` (threading, gevent or eventlet)."""
    if target.kind == "tcp":
        from ..net import Stream, TCPConnector

        size = len(payload)

        def echo(conn: Stream) -> None:
            conn.send_all(payload)
            need = size
            while need:
                chunk = conn.receive(need)
                if not chunk:
                    raise ConnectionResetError("the target closed the connection")
                need -= len(chunk)

        return SyncWorkload(TCPConnector(target.host, target.port, timeout=timeout, backend=backend), echo)
    if target.kind == "redis":
        try:
            from ..contrib.redis import RedisConnector
        except ImportError:  # pragma: no cover - an older connpool tree without contrib
            return _sync_redis(target, timeout)
        return SyncWorkload(RedisConnector(target.url, socket_connect_timeout=timeout), _ping)
    try:
        from ..contrib.psycopg import PsycopgConnector
    except ImportError:  # pragma: no cover
        return _sync_psycopg(target, timeout)
    return SyncWorkload(PsycopgConnector(target.url, autocommit=True, connect_timeout=timeout), _select)


def _ping(conn: Any) -> None:
    conn.ping()


def _select(conn: Any) -> None:
    conn.execute("SELECT 1").fetchone()


def _sync_redis(target: Target, timeout: float) -> SyncWorkload:
    """redis-py directly, for a tree without :mod:`connpool.contrib.redis`."""
    import redis

    def connect() -> redis.Redis:
        return redis.Redis.from_url(target.url, socket_connect_timeout=timeout, single_connection_client=True)

    return SyncWorkload(connect, _ping)


def _sync_psycopg(target: Target, timeout: float) -> SyncWorkload:
    """psycopg directly, for a tree without :mod:`connpool.contrib.psycopg`."""
    import psycopg

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(target.url, autocommit=True, connect_timeout=max(2, math.ceil(timeout)))

    return SyncWorkload(connect, _select)


def async_workload(target: Target, payload: bytes, timeout: float) -> AsyncWorkload:
    """The workload for an ``AsyncPool`` (asyncio or trio)."""
    if target.kind == "tcp":
        from ..net import AsyncStream, AsyncTCPConnector

        size = len(payload)

        async def echo(conn: AsyncStream) -> None:
            await conn.send_all(payload)
            need = size
            while need:
                chunk = await conn.receive(need)
                if not chunk:
                    raise ConnectionResetError("the target closed the connection")
                need -= len(chunk)

        return AsyncWorkload(AsyncTCPConnector(target.host, target.port, timeout=timeout), echo)
    if target.kind == "redis":
        try:
            from ..contrib.redis import AsyncRedisConnector
        except ImportError:  # pragma: no cover - an older connpool tree without contrib
            return _async_redis(target, timeout)
        return AsyncWorkload(AsyncRedisConnector(target.url, socket_connect_timeout=timeout), _aping)
    try:
        from ..contrib.psycopg import AsyncPsycopgConnector
    except ImportError:  # pragma: no cover
        return _async_psycopg(target, timeout)
    return AsyncWorkload(
        AsyncPsycopgConnector(target.url, autocommit=True, connect_timeout=timeout), _aselect
    )


async def _aping(conn: Any) -> None:
    await conn.ping()


async def _aselect(conn: Any) -> None:
    cursor = await conn.execute("SELECT 1")
    await cursor.fetchone()


def _async_redis(target: Target, timeout: float) -> AsyncWorkload:
    """redis-py's asyncio client directly, for a tree without :mod:`connpool.contrib.redis`."""
    import redis.asyncio as aredis

    async def connect() -> aredis.Redis:
        client = aredis.Redis.from_url(
            target.url, socket_connect_timeout=timeout, single_connection_client=True
        )
        await client.initialize()
        return client

    async def close(conn: aredis.Redis) -> None:
        await conn.aclose()

    return AsyncWorkload(connect, _aping, close)


def _async_psycopg(target: Target, timeout: float) -> AsyncWorkload:
    """psycopg's AsyncConnection directly, for a tree without :mod:`connpool.contrib.psycopg`."""
    import psycopg

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            target.url, autocommit=True, connect_timeout=max(2, math.ceil(timeout))
        )

    return AsyncWorkload(connect, _aselect)
