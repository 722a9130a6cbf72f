"""``Proxy``: one name for "the connection of whoever is running now".

A :class:`Proxy` forwards attribute access to a connection that belongs to
the current thread, greenlet or task (its *scope*), acquired lazily from a
pool on first use and given back automatically when that thread, greenlet
or task ends.  It also solves the module-level initialisation problem: a
module can export ``db = Proxy()`` before the pool exists, and the
application calls ``db.set_pool(pool)`` (or ``db.set_obj(obj)``) once it is
configured; every module that imported ``db`` then sees the pool::

    # database.py
    db = Proxy(scope="thread")

    def init_app(config):
        db.set_pool(Pool(PsycopgConnector(config.dsn), max_size=10))

    # anywhere else
    from database import db
    db.execute("SELECT 1")          # this thread's connection
    db.commit()
    db.release()                    # optional: give it back before the thread ends

How the end of each scope is noticed (no explicit release is needed):

``"thread"``
    the connection is kept in a native (never monkey-patched)
    ``_thread._local``; when the thread finishes, CPython drops its thread
    locals, and a :func:`weakref.finalize` on the record releases the
    connection -- before ``Thread.join()`` returns.  Under gevent or
    eventlet monkey-patching a "thread" is still an OS thread, shared by
    all the greenlets running in it: use ``"greenlet"`` there.
``"greenlet"``
    a gevent ``Greenlet`` is watched with ``rawlink``, an eventlet
    ``GreenThread`` with ``link``: the connection goes back as soon as the
    greenlet finishes (in the hub, right after it ends).  A raw greenlet
    (``gevent.spawn_raw``, ``eventlet.spawn_n``, the main greenlet) has no
    such hook: its connection goes back when the greenlet object is freed,
    or on ``release()``.  Needs gevent or eventlet.
``"task"``
    an asyncio task is watched with ``add_done_callback``.  trio has no
    done-callback API: the connection goes back through a
    :func:`weakref.finalize` on the trio task object, which CPython frees
    as soon as the task finishes, unless something keeps it alive (a
    traceback that references it, for instance).  That is best effort: on
    trio, prefer ``async with proxy:`` or ``release()``.
``"shared"``
    one connection for everyone, acquired on first use and kept until
    ``release()``.  ``set_obj(obj)`` is the same for a given object.

A connection is returned with ``pool.release``; if its thread, greenlet or
task ended with an exception that the pool's rules say leaves the
connection in an unknown state (cancellation, ``gevent.Timeout``,
``GreenletExit``, an exception in ``discard_on``), it is discarded instead.

With an :class:`connpool.AsyncPool`, attribute access is synchronous but
acquiring is not, so the connection must be acquired before it is used:
``await proxy.acquire_async()`` once in the task (or ``async with proxy:``
around the work); attribute access without it raises ``RuntimeError``
saying so.  A sync :class:`connpool.Pool` proxy acquires on first access.
Pair an ``AsyncPool`` with the ``"task"`` (or ``"shared"``) scope: with
``"thread"`` the connection would be released from the ending thread, not
from the event loop.

The proxy's own names -- ``set_pool``, ``set_obj``, ``acquire``,
``acquire_async``, ``release``, ``pool``, ``scope`` -- shadow the
connection's attributes of the same names (use ``proxy.acquire().name`` to
reach those).  Forwarded: attribute get/set/delete, calls, ``[]``,
``len``, ``in``, iteration and ``dir``.  ``with proxy as conn:`` and
``async with proxy as conn:`` are the proxy's own: they yield the
connection and give it back when the outermost block of the scope ends.
``bool(proxy)`` says whether a pool or an object was set, without acquiring.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import sys
import threading
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

from ._pool import UNSET
from .backends import BackendUnavailable

if TYPE_CHECKING:
    from ._async import AsyncPool
    from ._sync import Pool

__all__ = ["SCOPES", "Proxy"]

logger = logging.getLogger("connpool")

C = TypeVar("C")

Scope = Literal["thread", "greenlet", "task", "shared"]
#: The valid values of ``Proxy(scope=...)``.
SCOPES: tuple[str, ...] = ("thread", "greenlet", "task", "shared")

_NOTHING: Any = object()


class _Held:
    """One checked-out connection and how to give it back (exactly once)."""

    __slots__ = ("__weakref__", "conn", "depth", "finalizer", "pool")

    def __init__(self, pool: Any, conn: Any) -> None:
        self.pool = pool
        self.conn = conn
        self.depth = 0  # nesting of ``with proxy:`` blocks in this scope
        # Runs when the record is freed (thread scope: when the thread's
        # locals are dropped), or explicitly through ``give_back``.
        self.finalizer = weakref.finalize(self, _release, pool, conn, False)
        self.finalizer.atexit = False

    def give_back(self, discard: bool = False) -> None:
        """Release the connection, unless that already happened."""
        if self.finalizer.detach() is not None:
            _release(self.pool, self.conn, discard)


def _release(pool: Any, conn: Any, discard: bool) -> None:
    try:
        pool.release(conn, discard=discard)
    except Exception:
        logger.warning("Proxy: could not give %r back to %r", conn, pool, exc_info=True)


def _should_discard(pool: Any, exc: BaseException | None) -> bool:
    if exc is None:
        return False
    rule = getattr(pool, "_should_discard", None)
    if rule is not None:
        return bool(rule(exc))
    return not isinstance(exc, Exception) or isinstance(exc, OSError)


def _is_async_pool(pool: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(pool, "acquire", None))


def _installed(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _native_local() -> Any:
    """A thread-local class that is per OS thread even under monkey-patching."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("_thread", "_local")()
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        return patcher.original("_thread")._local()
    import _thread

    return _thread._local()


class Proxy(Generic[C]):
    """Forwards attribute access to the current thread's, greenlet's or task's connection.

    ``pool`` is a :class:`connpool.Pool` or :class:`connpool.AsyncPool` (or
    ``None``, to set it later with :meth:`set_pool`); ``scope`` is one of
    ``"thread"``, ``"greenlet"``, ``"task"``, ``"shared"`` (see the module
    documentation); ``timeout`` is what lazy acquires wait (default: the
    pool's).  An unknown scope raises ``ValueError``; ``"greenlet"`` without
    gevent or eventlet installed raises :class:`connpool.backends.BackendUnavailable`
    (an ``ImportError``).
    """

    __slots__ = (
        "__weakref__",
        "_proxy_held",
        "_proxy_local",
        "_proxy_lock",
        "_proxy_obj",
        "_proxy_pool",
        "_proxy_scope",
        "_proxy_shared",
        "_proxy_timeout",
    )

    _proxy_held: dict[int, _Held]
    _proxy_local: Any
    _proxy_lock: threading.Lock
    _proxy_obj: Any
    _proxy_pool: Pool[C] | AsyncPool[C] | None
    _proxy_scope: Scope
    _proxy_shared: _Held | None
    _proxy_timeout: float | None

    def __init__(
        self,
        pool: Pool[C] | AsyncPool[C] | None = None,
        scope: Scope = "thread",
        *,
        timeout: float | None = UNSET,
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}: choose one of {', '.join(map(repr, SCOPES))}")
        if scope == "greenlet" and not (
            _installed("greenlet") and (_installed("gevent") or _installed("eventlet"))
        ):
            raise BackendUnavailable(
                'scope "greenlet" needs gevent or eventlet, and neither is installed: '
                'pip install "connpool[gevent]" (or "connpool[eventlet]"); '
                'use scope "thread" or "task" otherwise'
            )
        _set = object.__setattr__
        _set(self, "_proxy_scope", scope)
        _set(self, "_proxy_timeout", timeout)
        _set(self, "_proxy_pool", None)
        _set(self, "_proxy_obj", _NOTHING)
        _set(self, "_proxy_lock", threading.Lock())
        _set(self, "_proxy_held", {})  # greenlet and task scopes: id(owner) -> _Held
        _set(self, "_proxy_local", _native_local() if scope == "thread" else None)
        _set(self, "_proxy_shared", None)  # shared scope: the _Held
        if pool is not None:
            self.set_pool(pool)

    # ----------------------------------------------------------- configuration

    @property
    def pool(self) -> Pool[C] | AsyncPool[C] | None:
        """The pool set with the constructor or :meth:`set_pool` (``None`` if none)."""
        return self._proxy_pool

    @property
    def scope(self) -> str:
        """The proxy's scope name."""
        return self._proxy_scope

    def set_pool(self, pool: Pool[C] | AsyncPool[C]) -> None:
        """Forward to connections from ``pool`` from now on.

        Connections already held from a previous pool go back to it when
        their scope next uses the proxy, calls :meth:`release` or ends.
        """
        if not (callable(getattr(pool, "acquire", None)) and callable(getattr(pool, "release", None))):
            raise TypeError(f"pool must be a connpool Pool or AsyncPool, got {type(pool).__name__}")
        object.__setattr__(self, "_proxy_pool", pool)
        object.__setattr__(self, "_proxy_obj", _NOTHING)
        with self._proxy_lock:
            shared = self._proxy_shared
            object.__setattr__(self, "_proxy_shared", None)
        if shared is not None:
            shared.give_back()

    def set_obj(self, obj: Any) -> None:
        """Forward to ``obj`` itself, for every thread, greenlet and task (no pool involved)."""
        object.__setattr__(self, "_proxy_obj", obj)

    # ------------------------------------------------------------- checkout

    def acquire(self, timeout: float | None = UNSET) -> C:
        """The current scope's connection, acquired now if it holds none (sync pools).

        ``timeout`` defaults to the proxy's, then the pool's.  With an
        ``AsyncPool`` this only returns a connection already acquired with
        :meth:`acquire_async`, and raises ``RuntimeError`` otherwise.
        """
        obj = self._proxy_obj
        if obj is not _NOTHING:
            return cast(C, obj)
        held = self._lookup()
        if held is not None:
            return cast(C, held.conn)
        pool = self._require_pool()
        if _is_async_pool(pool):
            raise RuntimeError(
                "this Proxy's pool is an AsyncPool: acquiring needs an await, so call "
                "`await proxy.acquire_async()` (or use `async with proxy:`) in this task before "
                "using the proxy"
            )
        owner = self._owner()
        conn = pool.acquire(self._effective_timeout(timeout))
        return cast(C, self._store(owner, pool, conn).conn)

    async def acquire_async(self, timeout: float | None = UNSET) -> C:
        """The current scope's connection, acquired now from an ``AsyncPool`` if it holds none.

        After it, plain attribute access works in this task until the task
        ends or :meth:`release` is called.  With a sync ``Pool`` this is
        :meth:`acquire` (which may block the event loop).
        """
        obj = self._proxy_obj
        if obj is not _NOTHING:
            return cast(C, obj)
        held = self._lookup()
        if held is not None:
            return cast(C, held.conn)
        pool = self._require_pool()
        if not _is_async_pool(pool):
            return self.acquire(timeout)
        owner = self._owner()
        conn = await pool.acquire(self._effective_timeout(timeout))
        held = self._lookup()
        if held is not None:  # another coroutine of the same scope got there first
            pool.release(conn)
            return cast(C, held.conn)
        return cast(C, self._store(owner, pool, conn).conn)

    def release(self, discard: bool = False) -> None:
        """Give the current scope's connection back now (no-op if it holds none).

        With ``discard=True`` the pool closes it instead of reusing it.  The
        next attribute access acquires a new one.  On a ``"shared"`` proxy
        this releases the shared connection.
        """
        held = self._take()
        if held is not None:
            held.give_back(discard)

    # ---------------------------------------------------------- forwarding

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_proxy_"):
            raise AttributeError(name)  # a slot not set yet (during __init__)
        return getattr(self.acquire(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__orig_class__":
            return  # set by typing on ``Proxy[T]()``: not the connection's business
        setattr(self.acquire(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.acquire(), name)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        if self._proxy_obj is not _NOTHING or self._lookup() is not None:
            names.update(dir(self.acquire()))
        return sorted(names)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.acquire()(*args, **kwargs)  # type: ignore[operator]

    def __getitem__(self, key: Any) -> Any:
        return self.acquire()[key]  # type: ignore[index]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.acquire()[key] = value  # type: ignore[index]

    def __delitem__(self, key: Any) -> None:
        del self.acquire()[key]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.acquire())  # type: ignore[arg-type]

    def __contains__(self, item: Any) -> bool:
        return item in self.acquire()  # type: ignore[operator]

    def __iter__(self) -> Iterator[Any]:
        iterator: Iterator[Any] = iter(self.acquire())  # type: ignore[call-overload]
        return iterator

    def __bool__(self) -> bool:
        """Whether a pool or an object was set (nothing is acquired)."""
        return self._proxy_obj is not _NOTHING or self._proxy_pool is not None

    def __repr__(self) -> str:
        obj = self._proxy_obj
        if obj is not _NOTHING:
            target = f"obj={obj!r}"
        else:
            held = self._lookup()
            target = f"pool={self._proxy_pool!r}" + (f" holding {held.conn!r}" if held is not None else "")
        return f"<Proxy scope={self._proxy_scope!r} {target}>"

    # ------------------------------------------------------ context managers

    def __enter__(self) -> C:
        conn = self.acquire()
        held = self._lookup()
        if held is not None:
            held.depth += 1
        return conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave(exc)

    async def __aenter__(self) -> C:
        conn = await self.acquire_async()
        held = self._lookup()
        if held is not None:
            held.depth += 1
        return conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave(exc)

    def _leave(self, exc: BaseException | None) -> None:
        held = self._lookup()
        if held is None or self._proxy_scope == "shared":
            return
        held.depth -= 1
        if held.depth <= 0 and self._take() is held:
            held.give_back(_should_discard(held.pool, exc))

    # --------------------------------------------------------------- scopes

    def _require_pool(self) -> Any:
        pool = self._proxy_pool
        if pool is None:
            raise RuntimeError(
                "this Proxy has no pool or object yet: call set_pool(pool) or set_obj(obj) first"
            )
        return pool

    def _effective_timeout(self, timeout: float | None) -> float | None:
        return self._proxy_timeout if timeout is UNSET else timeout

    def _lookup(self) -> _Held | None:
        """The current scope's record, if it holds a connection from the current pool."""
        scope = self._proxy_scope
        if scope == "thread":
            held: _Held | None = getattr(self._proxy_local, "held", None)
        elif scope == "shared":
            held = self._proxy_shared
        else:
            key = self._key()
            if key is None:
                return None
            held = self._proxy_held.get(key)
        if held is not None and held.pool is not self._proxy_pool:
            # set_pool() replaced the pool: give the old connection back
            if self._take() is held:
                held.give_back()
            return None
        return held

    def _take(self) -> _Held | None:
        """Detach and return the current scope's record (the caller gives it back)."""
        scope = self._proxy_scope
        if scope == "thread":
            local = self._proxy_local
            held: _Held | None = getattr(local, "held", None)
            if held is not None:
                del local.held
            return held
        with self._proxy_lock:
            if scope == "shared":
                held = self._proxy_shared
                object.__setattr__(self, "_proxy_shared", None)
                return held
            key = self._key()
            return None if key is None else self._proxy_held.pop(key, None)

    def _key(self) -> int | None:
        """``id`` of the current greenlet or task (``None`` outside any task)."""
        if self._proxy_scope == "greenlet":
            import greenlet

            return id(greenlet.getcurrent())
        task = _current_task()
        return None if task is None else id(task)

    def _owner(self) -> Any:
        """The current greenlet or task (raising if there is none); ``None`` for thread and shared."""
        scope = self._proxy_scope
        if scope == "greenlet":
            import greenlet

            return greenlet.getcurrent()
        if scope == "task":
            task = _current_task()
            if task is None:
                raise RuntimeError(
                    'a Proxy with scope "task" must be used from inside an asyncio or trio task'
                )
            return task
        return None

    def _store(self, owner: Any, pool: Any, conn: Any) -> _Held:
        """Record ``conn`` as the current scope's, and arrange its return when the scope ends."""
        held = _Held(pool, conn)
        scope = self._proxy_scope
        try:
            if scope == "thread":
                self._proxy_local.held = held  # freed with the thread's locals: the finalizer releases
            elif scope == "shared":
                with self._proxy_lock:
                    current = self._proxy_shared
                    if current is None:
                        object.__setattr__(self, "_proxy_shared", held)
                if current is not None:  # another thread shared one first: use it
                    held.give_back()
                    return current
            else:
                with self._proxy_lock:
                    self._proxy_held[id(owner)] = held
                _watch(owner, functools.partial(self._ended, id(owner), held))
        except BaseException:
            self._take()
            held.give_back()
            raise
        return held

    def _ended(self, key: int, held: _Held, exc: BaseException | None) -> None:
        """The greenlet or task ``key`` finished (``exc``: the exception it ended with)."""
        with self._proxy_lock:
            if self._proxy_held.get(key) is held:
                del self._proxy_held[key]
        held.give_back(_should_discard(held.pool, exc))


# ---------------------------------------------------------------- end hooks


def _current_task() -> Any:
    """The running asyncio or trio task, or ``None``."""
    import sniffio

    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None
    if library == "asyncio":
        import asyncio

        return asyncio.current_task()
    if library == "trio":
        import trio

        return trio.lowlevel.current_task()
    return None


def _watch(owner: Any, ended: Any) -> None:
    """Call ``ended(exc)`` once ``owner`` (a greenlet or a task) finishes."""
    if hasattr(owner, "rawlink"):  # gevent.Greenlet
        owner.rawlink(lambda g: ended(_gevent_exception(g)))
    elif hasattr(owner, "add_done_callback"):  # asyncio.Task
        owner.add_done_callback(lambda task: ended(_task_exception(task)))
    elif hasattr(owner, "link") and hasattr(owner, "wait"):  # eventlet.greenthread.GreenThread
        owner.link(lambda gt: ended(_greenthread_exception(gt)))
    else:  # a raw greenlet or a trio task: when the object is freed
        weakref.finalize(owner, ended, None).atexit = False


def _gevent_exception(greenlet: Any) -> BaseException | None:
    exc = greenlet.exception
    if isinstance(exc, BaseException):
        return exc
    value = greenlet.value  # a greenlet killed with GreenletExit "succeeds" with the exception as value
    return value if isinstance(value, BaseException) else None


def _task_exception(task: Any) -> BaseException | None:
    if task.cancelled():
        import asyncio

        return asyncio.CancelledError()
    # ``task.exception()`` would mark the exception as retrieved and silence
    # asyncio's "exception was never retrieved" report: peek instead.
    exc = getattr(task, "_exception", None)
    return exc if isinstance(exc, BaseException) else None


def _greenthread_exception(gt: Any) -> BaseException | None:
    try:
        gt.wait()  # finished: returns or raises at once
    except BaseException as exc:
        return exc
    return None
