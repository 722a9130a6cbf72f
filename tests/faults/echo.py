"""EchoServer: a tiny echo server for the fault tests, independent of the runtime under test.

    with EchoServer() as server:          # 127.0.0.1, a free port
        sock = socket.create_connection(server.address, timeout=2)
        server.stop()                      # the server "dies": connections closed, connects refused
        server.restart()                   # back on the same port

Every byte a client sends is sent back; when the client half-closes, the
server sends what is left and closes too.  Like :class:`FaultProxy`, it
runs in a real OS thread with raw sockets (see ``_originals.py``), so it
does not depend on ``connpool.net`` nor on the runtime of the test, and a
test can stop it from any runtime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from ._loop import POLLIN, POLLOUT, Handler, ServerLoop
from ._originals import RawSocket, fin_close, reset_close

__all__ = ["EchoServer"]

BUFFER = 65536


class _Conn:
    __slots__ = ("buffer", "closed", "eof", "sock")

    def __init__(self, sock: RawSocket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False
        self.closed = False


class EchoServer(ServerLoop):
    """An echo server on ``host``:``port`` (default 127.0.0.1, a free port), in its own OS thread.

    ``stop(reset=False)`` simulates the server going away: it stops listening
    (connects are refused) and closes every connection, with a FIN or, with
    ``reset=True``, a RST.  ``restart()`` listens again on the same port.
    Counters: ``accepted``, ``live``; ``wait_accepted(n)`` / ``wait_live(n)``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(f"EchoServer({host}:{port})", host, port)
        self._conns: list[_Conn] = []

    def start(self) -> EchoServer:
        """Listen and start the server thread; returns ``self``."""
        super().start()
        return self

    def __enter__(self) -> EchoServer:
        super().__enter__()
        return self

    @property
    def live(self) -> int:
        """Connections open now."""
        return len(self._conns)

    @property
    def running(self) -> bool:
        """Whether the server accepts connections (not stopped)."""
        return self.listening

    def stop(self, *, reset: bool = False) -> int:
        """Stop listening and close every connection (FIN, or RST with ``reset``); returns how many."""
        return int(self.call(lambda: self._stop(reset)))

    def restart(self) -> None:
        """Listen again, on the same port."""
        self.call(self._restart)

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "not started"
        return f"<EchoServer {where} accepted={self.accepted} live={self.live}>"

    # ------------------------------------------------------------ loop side

    def _stop(self, reset: bool) -> int:
        self.stop_listening()
        conns = list(self._conns)
        for conn in conns:
            conn.closed = True
            (reset_close if reset else fin_close)(conn.sock)
        self._conns.clear()
        return len(conns)

    def _restart(self) -> None:
        if not self.listening:
            self.start_listening()

    def _admit(self, sock: RawSocket, addr: Any) -> None:
        self._accepted += 1
        self._conns.append(_Conn(sock))

    def _on_accept(self, events: int) -> None:
        self.accept_pending(self._admit)

    def interest(self) -> Iterable[tuple[Any, int, Handler]]:
        if self.listening:
            yield self.listener, POLLIN, self._on_accept
        for conn in self._conns:
            mask = (POLLIN if not conn.eof and len(conn.buffer) < BUFFER else 0) | (
                POLLOUT if conn.buffer else 0
            )

            def pump(events: int, conn: _Conn = conn) -> None:
                if not conn.closed:
                    self._pump(conn)

            yield conn.sock, mask, pump

    def _pump(self, conn: _Conn) -> None:
        try:
            if not conn.eof and len(conn.buffer) < BUFFER:
                try:
                    data = conn.sock.recv(BUFFER - len(conn.buffer))
                except (BlockingIOError, InterruptedError):
                    pass
                else:
                    if data:
                        conn.buffer += data
                    else:
                        conn.eof = True
            if conn.buffer:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    del conn.buffer[: conn.sock.send(conn.buffer)]
        except OSError:
            self._drop(conn, reset_close)
            return
        if conn.eof and not conn.buffer:
            self._drop(conn, fin_close)

    def _drop(self, conn: _Conn, close: Any) -> None:
        conn.closed = True
        close(conn.sock)
        if conn in self._conns:
            self._conns.remove(conn)

    def shutdown(self) -> None:
        for conn in self._conns:
            conn.closed = True
            fin_close(conn.sock)
        self._conns.clear()
        super().shutdown()
