"""A tiny poll loop in a real OS thread, driven by commands from the test's thread.

Every socket of a fault server is owned by its loop thread.  The test side
never touches them: it submits a command (a function) and blocks on a real
lock until the loop ran it, so when a control method returns its effect has
happened (the listener is closed, the RSTs are sent).  Waiting on a real lock
from a greenlet blocks its hub for that instant, which is harmless: the loop
thread never needs the test's runtime to make progress.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ._originals import (
    RawSocket,
    allocate_lock,
    bind_listener,
    poll,
    start_thread,
    wait_until,
    wait_until_async,
)

__all__ = ["IOLoop", "LoopError", "ServerLoop"]

POLLIN = 0x001
POLLOUT = 0x004
POLLERR = 0x008
POLLHUP = 0x010

Handler = Callable[[int], None]


class LoopError(RuntimeError):
    """The loop thread failed (its error is the ``__cause__``) or did not answer in time."""


class _Command:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = allocate_lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None


class IOLoop:
    """Base class: subclasses say what to watch (:meth:`interest`) and handle readiness."""

    command_timeout = 10.0

    def __init__(self, name: str) -> None:
        self.name = name
        self._commands: deque[_Command] = deque()
        self._commands_lock = allocate_lock()
        self._wake_r: Any = None
        self._wake_w: Any = None
        self._running = False
        self._stopping = False
        self._dead = False
        self._exited = allocate_lock()
        self.error: BaseException | None = None

    # ------------------------------------------------------------ test side

    def start_loop(self) -> None:
        self._wake_r, self._wake_w = _socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._exited.acquire()
        self._running = True
        self._stopping = self._dead = False
        start_thread(self._run)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in the loop thread, wait for it and return its result (or raise its error)."""
        if not self._running:
            raise LoopError(f"{self.name} is not running")
        command = _Command(fn)
        with self._commands_lock:
            if self._dead:
                raise LoopError(f"{self.name}: the loop thread is gone") from self.error
            self._commands.append(command)
        self._wake()
        if not command.done.acquire(True, self.command_timeout):
            raise LoopError(f"{self.name}: the loop thread did not answer in {self.command_timeout}s")
        if command.error is not None:
            raise command.error
        return command.result

    def stop_loop(self) -> None:
        """Stop the thread (it runs :meth:`shutdown` last); idempotent. Raises if the thread had failed."""
        if self._running:
            self._stopping = True
            self._wake()
            if not self._exited.acquire(True, self.command_timeout):
                raise LoopError(f"{self.name}: the loop thread did not stop")
            self._running = False
            self._wake_w.close()
            self._wake_r.close()
        if self.error is not None:
            error, self.error = self.error, None
            raise LoopError(f"{self.name}: the loop thread failed: {error!r}") from error

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: full, the loop wakes up anyway
            self._wake_w.send(b"x")

    # ------------------------------------------------------------ loop side

    def interest(self) -> Iterable[tuple[Any, int, Handler]]:
        """``(socket, poll mask, handler(events))`` for every socket to watch now."""
        return ()

    def poll_timeout(self) -> float | None:
        """Seconds the next poll may block (``None``: until something happens)."""
        return None

    def shutdown(self) -> None:
        """Close every socket; runs in the loop thread when it stops."""

    def _run(self) -> None:
        try:
            while True:
                self._run_commands()
                if self._stopping:
                    break
                poller = poll()
                poller.register(self._wake_r.fileno(), POLLIN)
                handlers: dict[int, Handler] = {}
                for sock, mask, handler in self.interest():
                    fd = sock.fileno()
                    if fd < 0 or not mask:
                        continue
                    poller.register(fd, mask)
                    handlers[fd] = handler
                timeout = self.poll_timeout()
                ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
                for fd, events in ready:
                    if fd == self._wake_r.fileno():
                        self._drain_wake()
                    else:
                        handlers[fd](events)
        except BaseException as exc:
            self.error = exc
        finally:
            try:
                self.shutdown()
            except BaseException as exc:
                self.error = self.error or exc
            self._fail_pending()
            self._exited.release()

    def _run_commands(self) -> None:
        while True:
            with self._commands_lock:
                if not self._commands:
                    return
                command = self._commands.popleft()
            try:
                command.result = command.fn()
            except BaseException as exc:
                command.error = exc
            command.done.release()

    def _fail_pending(self) -> None:
        with self._commands_lock:
            self._dead = True
            pending = list(self._commands)
            self._commands.clear()
        for command in pending:
            command.error = LoopError(f"{self.name} stopped")
            command.done.release()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass


class ServerLoop(IOLoop):
    """An :class:`IOLoop` that owns a listening socket: the common part of the fault servers.

    The listener is bound once, to an explicit port, and kept for the
    server's whole life: ``shutdown(SHUT_RD)`` stops it listening (connects
    are refused, queued connections reset) without releasing the port, and
    ``listen()`` reopens it.  So a "restarted" server is back on the same port
    and no other socket can take the port meanwhile.
    """

    backlog = 128

    def __init__(self, name: str, host: str, port: int) -> None:
        super().__init__(name)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.listener: Any = None
        self.listening = False
        self._accepted = 0

    # ------------------------------------------------------------ test side

    @property
    def port(self) -> int:
        """The listening port (known once started)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return (self.host, self.port)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self._accepted

    @property
    def live(self) -> int:
        """Connections open now."""
        return 0

    def start(self) -> Any:
        """Bind, listen and start the loop thread; returns ``self``."""
        if self._port is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.listener = bind_listener(self.host, self._requested_port)
        self.listener.setblocking(False)
        self._port = self.listener.getsockname()[1]
        self.name = f"{type(self).__name__}({self.host}:{self._port})"
        self.listener.listen(self.backlog)
        self.listening = True
        self.start_loop()
        return self

    def close(self) -> None:
        """Stop the thread and close every socket; idempotent."""
        if self.listener is not None:
            self.stop_loop()

    def __enter__(self) -> Any:
        if self._port is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_accepted(
        self, n: int, timeout: float = 5.0, sleep: Callable[[float], object] | None = None
    ) -> bool:
        """Wait until at least ``n`` connections were accepted; whether that happened in time.

        ``sleep`` polls (default: the calling thread's runtime sleep, see
        :func:`runtime_sleep`; pass ``sched.sleep`` to be explicit).
        """
        return wait_until(lambda: self.accepted >= n, timeout, sleep)

    def wait_live(self, n: int, timeout: float = 5.0, sleep: Callable[[float], object] | None = None) -> bool:
        """Wait until exactly ``n`` connections are open; whether that happened in time."""
        return wait_until(lambda: self.live == n, timeout, sleep)

    async def wait_accepted_async(
        self, n: int, timeout: float = 5.0, sleep: Callable[[float], Any] | None = None
    ) -> bool:
        """:meth:`wait_accepted` for async tests (polls with ``anyio.sleep`` by default)."""
        return await wait_until_async(lambda: self.accepted >= n, timeout, sleep)

    async def wait_live_async(
        self, n: int, timeout: float = 5.0, sleep: Callable[[float], Any] | None = None
    ) -> bool:
        """:meth:`wait_live` for async tests."""
        return await wait_until_async(lambda: self.live == n, timeout, sleep)

    # ------------------------------------------------------------ loop side

    def stop_listening(self) -> None:
        """Connects are refused from now on; connections still queued are reset (loop thread)."""
        if self.listening:
            self.listener.shutdown(_socket.SHUT_RD)
            self.listening = False

    def start_listening(self, backlog: int | None = None) -> None:
        """Listen again on the same port (loop thread)."""
        self.listener.listen(self.backlog if backlog is None else backlog)
        self.listening = True

    def accept_pending(self, admit: Callable[[Any, Any], None]) -> None:
        """Accept every queued connection and hand each to ``admit(sock, addr)`` (loop thread)."""
        while True:
            try:
                fd, addr = self.listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                if exc.errno == errno.EINVAL:  # not listening
                    return
                raise
            sock = RawSocket(fileno=fd)
            sock.setblocking(False)
            admit(sock, addr)

    def shutdown(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listening = False
