"""Workloads for the synchronous runtimes: threading, gevent and eventlet.

One implementation serves the three runtimes through a small *kit* (see ``SyncKit``) that
says how to spawn and join a worker, how to yield once and how to sleep. On gevent and
eventlet the process is monkey-patched before this module is imported (``child.py``), so
``socket`` here is the cooperative one and the echo server below serves the green
runtimes as it serves threads.

Each cycle of a worker is::

    t0 = perf_counter(); conn = acquire(); t1 = perf_counter()
    use(conn)                     # yield once, or one TCP round trip
    release(conn)

A cycle is counted, and its acquire wait recorded (two ``perf_counter`` calls, one list
append), when it ends inside the measurement window; see ``bench_common.Contention.settle`` for
the last cycle of each worker, which keeps a starved worker's wait in the figures.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from bench_common import (
    BATCH,
    MEASURE,
    MESSAGE,
    POOL_SIZE,
    STOP,
    Conn,
    Connector,
    Contention,
    PoolSpec,
    Settings,
    failed,
    keep_best,
    now,
    progress,
    result,
)


class SyncKit(Protocol):
    """What a synchronous runtime module provides to the workloads."""

    name: str
    workers: int  # contended workers: 16 threads, or 200 greenlets

    def spawn(self, fn: Callable[..., None], *args: Any) -> Any: ...
    def join_all(self, handles: list[Any], timeout: float) -> bool: ...
    def yield_once(self) -> None: ...
    def sleep(self, seconds: float) -> None: ...


# --------------------------------------------------------------------------- real I/O


class SockConn:
    """A real TCP connection to the echo server, as a pool would hold it."""

    closed = False

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def roundtrip(self) -> None:
        sock = self.sock
        sock.sendall(MESSAGE)
        expected = len(MESSAGE)
        got = len(sock.recv(expected))
        while got < expected:
            chunk = sock.recv(expected - got)
            if not chunk:
                raise ConnectionError("echo server closed the connection")
            got += len(chunk)

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def rollback(self) -> None:
        pass


def tcp_connect(port: int) -> SockConn:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SockConn(sock)


@contextlib.contextmanager
def echo_server(kit: SyncKit) -> Iterator[int]:
    """A tiny echo server: one worker (thread or greenlet) per connection. Yields its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    stopping = False

    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if stopping:
                conn.close()
                return
            kit.spawn(serve, conn)

    acceptor = kit.spawn(accept_loop)
    try:
        yield port
    finally:
        stopping = True
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port)).close()  # wake the acceptor
        kit.join_all([acceptor], timeout=5.0)
        listener.close()


# --------------------------------------------------------------------------- workloads


def uncontended(acquire: Callable[[], Any], release: Callable[[Any], Any], settings: Settings) -> float:
    """One worker, acquire+release back to back; returns ops/s."""
    end = now() + settings.warmup
    while now() < end:
        for _ in range(BATCH):
            release(acquire())
    count = 0
    start = now()
    end = start + settings.duration
    while True:
        for _ in range(BATCH):
            release(acquire())
        count += BATCH
        stop = now()
        if stop >= end:
            return count / (stop - start)


def _worker(run: Contention, index: int) -> None:
    acquire, release, use = run.acquire, run.release, run.use
    perf = time.perf_counter
    samples = run.waits[index]
    record = samples.append
    count = 0
    try:
        while True:
            t0 = perf()
            conn = acquire()
            t1 = perf()
            use(conn)
            release(conn)
            phase = run.phase
            if phase == MEASURE:
                count += 1
                record(t1 - t0)
            elif phase == STOP:
                break
        run.last[index] = (t0, t1)
    except BaseException as exc:
        run.errors.append(exc)
    run.counts[index] = count


def contended(kit: SyncKit, run: Contention, settings: Settings) -> None:
    """``kit.workers`` workers cycling on one pool, then ``run`` holds their figures."""
    handles = [kit.spawn(_worker, run, i) for i in range(kit.workers)]
    kit.sleep(settings.warmup)
    run.open_window()
    kit.sleep(settings.duration)
    run.close_window()
    if not kit.join_all(handles, settings.hang_timeout):
        raise TimeoutError(f"workers still running {settings.hang_timeout}s after the end (pool hung?)")
    if run.errors:
        raise run.errors[0]
    run.settle()


# --------------------------------------------------------------------------- runner


def _yield_use(kit: SyncKit) -> Callable[[Any], None]:
    yield_once = kit.yield_once

    def use(_conn: Any) -> None:
        yield_once()

    return use


def _io_use(conn: Any) -> None:
    conn.roundtrip()


def run_one(
    kit: SyncKit, spec: PoolSpec, workload: str, port: int | None, settings: Settings
) -> dict[str, Any]:
    """Measure one pool on one workload; never raises.

    A failure becomes the record's ``error``; one while closing the pool after a complete
    measurement keeps the figures and goes to ``teardown_error``.
    """
    if workload == "io":
        assert port is not None
        connector = Connector(lambda: tcp_connect(port))
    else:
        connector = Connector(Conn)
    size = POOL_SIZE
    if spec.unbounded:
        size = 1 if workload == "uncontended" else kit.workers
    measured: list[dict[str, Any]] = []
    try:
        with spec.factory(connector, size) as (acquire, release):
            if workload == "uncontended":
                measured.append(result(spec, workload, kit.name, ops=uncontended(acquire, release, settings)))
            else:
                use = _io_use if workload == "io" else _yield_use(kit)
                run = Contention(acquire, release, use, kit.workers)
                contended(kit, run, settings)
                measured.append(run.record(spec, workload, kit.name))
        return measured[0]
    except Exception as exc:
        return failed(spec, workload, kit.name, exc, measured)
    finally:
        for conn in connector.made:
            with contextlib.suppress(Exception):
                conn.close()


def run_runtime(kit: SyncKit, specs: list[PoolSpec], settings: Settings) -> list[dict[str, Any]]:
    """Every workload on every pool of the line-up, in order (``settings.repeat`` rounds,
    interleaved, keeping each pool's best); returns the records."""
    records = []
    wanted = [spec for spec in specs if settings.wants(spec.name)]
    for workload in settings.workloads:
        server = echo_server(kit) if workload == "io" else contextlib.nullcontext(None)
        with server as port:
            tries: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in wanted}
            for _ in range(settings.repeat):
                for spec in wanted:
                    record = run_one(kit, spec, workload, port, settings)
                    progress(record)
                    tries[spec.name].append(record)
        records += [keep_best(tries[spec.name]) for spec in wanted]
    return records
