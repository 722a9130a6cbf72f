"""FaultProxy: a TCP proxy the tests can make refuse, cut, stall or blackhole connections.

    with EchoServer() as server, FaultProxy(*server.address) as proxy:
        sock = socket.create_connection(proxy.address, timeout=2)   # forwarded to the server
        proxy.reset_all()          # the client's next read raises ConnectionResetError
        proxy.refuse()             # new connects: ConnectionRefusedError
        proxy.blackhole()          # new connects hang until the client's timeout
        proxy.pass_through()       # back to normal (same port)

The proxy runs in a real OS thread of its own, with raw sockets and the
original ``poll`` (see ``_originals.py``), so it works the same from
threading, gevent, eventlet (patched or not), asyncio and trio tests.
Every control method runs in that thread and returns once its effect has
happened.  It listens on 127.0.0.1 on a free port by default, for its whole
life: ``refuse()`` and ``pass_through()`` stop and resume listening on the
same port.

Modes (one at a time; each method switches to it, at any moment):

``pass_through()``
    New connections are accepted and forwarded to the target, and forwarding
    resumes on existing ones.  The default.
``stall()``
    New connections are accepted (and connected upstream) but no byte is
    forwarded in either direction, on new and existing connections alike:
    reads time out, a peer's close goes unnoticed.  Nothing is lost: bytes
    wait in the kernel buffers until ``pass_through()``.
``refuse()``
    The proxy stops listening: connects fail with ``ECONNREFUSED`` (and
    connections queued but not yet accepted are reset).  Existing connections
    are left as they are.
``blackhole()``
    Connects hang: the kernel does not complete the TCP handshake.  No byte
    is forwarded on existing connections.  How: the listener's accept queue
    is shrunk to its minimum (``listen(0)``) and filled with dummy
    connections the proxy makes to itself and never accepts; with the queue
    full, Linux drops incoming SYNs (``tcp_abort_on_overflow`` is 0 by
    default), so the client's ``connect()`` retransmits its SYN and waits
    until its own timeout.  The dummies are added until one of them hangs, so
    the method checks its own effect.  No root, no firewall rule.  After
    ``pass_through()`` a client still inside ``connect()`` gets through at its
    next SYN retransmission (1 s, 3 s, 7 s ... after it started).
``reset_new()`` / ``close_new()``
    New connections are accepted and at once cut with a RST /
    closed with a FIN (the client sees ``ECONNRESET`` / end of stream on its
    first read; the reset may even reach a client still inside ``connect()``,
    which then raises ``ConnectionResetError``).  Existing connections are
    left as they are.

One-shot actions, which leave the mode unchanged:

``reset_all()``
    Cut every live connection with a RST on both sides (``SO_LINGER`` 0):
    the client's next read or write raises ``ConnectionResetError``
    (or ``BrokenPipeError``).
``close_all()``
    Close every live connection with a FIN on both sides: the client reads
    end of stream.

If the target refuses the proxy's upstream connection, the client's
connection is reset and ``upstream_failures`` counts it; use ``refuse()``
to make the client's own connect fail.

Counters: ``accepted`` (client connections accepted, cut ones included),
``live`` (client connections the proxy holds now), ``cut`` (connections the
proxy cut: ``reset_all``/``close_all`` and the ``reset_new``/``close_new``
modes), ``upstream_failures``; ``stats()`` returns them all with the mode.
``wait_accepted(n)`` / ``wait_live(n)`` (and ``*_async``) poll them.
"""

from __future__ import annotations

import _socket
import errno
from collections.abc import Iterable
from typing import Any, Literal

from ._loop import POLLIN, POLLOUT, Handler, ServerLoop
from ._originals import RawSocket, fin_close, poll, reset_close

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "stall", "refuse", "blackhole", "reset", "close"]

BUFFER = 65536
#: How long a dummy connect may take before the accept queue counts as full.
PROBE_SECONDS = 0.05
MAX_DUMMIES = 16


class _Link:
    """One client connection and its upstream connection."""

    __slots__ = (
        "c2u",
        "client",
        "client_eof",
        "client_shut",
        "closed",
        "connecting",
        "u2c",
        "upstream",
        "upstream_eof",
        "upstream_shut",
    )

    def __init__(self, client: RawSocket, upstream: RawSocket) -> None:
        self.client = client
        self.upstream = upstream
        self.connecting = True
        self.c2u = bytearray()  # read from the client, to send upstream
        self.u2c = bytearray()
        self.client_eof = False  # the client sent its FIN
        self.upstream_eof = False
        self.client_shut = False  # we sent our FIN to the client
        self.upstream_shut = False
        self.closed = False


class FaultProxy(ServerLoop):
    """A TCP proxy to ``(target_host, target_port)`` whose faults the test switches (see the module docs)."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(f"FaultProxy(-> {target_host}:{target_port})", host, port)
        self.target = (target_host, target_port)
        self._mode: Mode = "pass"
        self._forwarding = True
        self._links: list[_Link] = []
        self._dummies: list[tuple[RawSocket, bool]] = []  # (socket, handshake completed)
        self._cut = 0
        self._upstream_failures = 0

    def start(self) -> FaultProxy:
        """Listen and start the proxy thread; returns ``self``."""
        super().start()
        return self

    def __enter__(self) -> FaultProxy:
        super().__enter__()
        return self

    # ------------------------------------------------------------ state

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    @property
    def live(self) -> int:
        """Client connections the proxy holds now."""
        return len(self._links)

    @property
    def cut(self) -> int:
        """Connections the proxy cut (reset or closed) on purpose."""
        return self._cut

    @property
    def upstream_failures(self) -> int:
        """Client connections reset because the target refused the proxy."""
        return self._upstream_failures

    def stats(self) -> dict[str, Any]:
        """A snapshot of the mode and counters."""
        return {
            "mode": self._mode,
            "accepted": self.accepted,
            "live": self.live,
            "cut": self._cut,
            "upstream_failures": self._upstream_failures,
        }

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "not started"
        return f"<FaultProxy {where} -> {self.target[0]}:{self.target[1]} {self.stats()}>"

    # ------------------------------------------------------------ modes

    def pass_through(self) -> None:
        """Accept and forward; resume forwarding on existing connections."""
        self.call(lambda: self._switch("pass", listen=True, forwarding=True))

    def stall(self) -> None:
        """Accept, but forward no byte on any connection."""
        self.call(lambda: self._switch("stall", listen=True, forwarding=False))

    def refuse(self) -> None:
        """Stop listening: connects get ECONNREFUSED. Existing connections are left alone."""
        self.call(lambda: self._switch("refuse", listen=False, forwarding=None))

    def blackhole(self) -> None:
        """Connects hang (handshakes are not completed); nothing is forwarded."""
        self.call(lambda: self._switch("blackhole", listen="plugged", forwarding=False))

    def reset_new(self) -> None:
        """Accept new connections and reset them at once. Existing connections are left alone."""
        self.call(lambda: self._switch("reset", listen=True, forwarding=None))

    def close_new(self) -> None:
        """Accept new connections and close them at once (FIN). Existing connections are left alone."""
        self.call(lambda: self._switch("close", listen=True, forwarding=None))

    def reset_all(self) -> int:
        """Cut every live connection with a RST (both sides); returns how many were cut."""
        return int(self.call(lambda: self._cut_all(reset=True)))

    def close_all(self) -> int:
        """Close every live connection with a FIN (both sides); returns how many were closed."""
        return int(self.call(lambda: self._cut_all(reset=False)))

    # ------------------------------------------------------------ loop side

    def _switch(self, mode: Mode, *, listen: bool | Literal["plugged"], forwarding: bool | None) -> None:
        if self._dummies and listen != "plugged":
            self._unplug(listen=bool(listen))
        if listen == "plugged":
            if not self._dummies:
                self._plug()
        elif listen:
            if not self.listening:
                self.start_listening()
        else:
            if self.listening:
                self.accept_pending(self._admit)  # a client whose connect succeeded keeps its connection
            self.stop_listening()
        self._mode = mode
        if forwarding is not None:
            self._forwarding = forwarding
        if self._forwarding:
            for link in list(self._links):
                if not link.connecting:
                    self._pump(link)

    def _plug(self) -> None:
        """Shrink the accept queue and fill it with dummy connections, until one connect hangs."""
        self.start_listening(backlog=0)
        self.accept_pending(self._admit)
        for _ in range(MAX_DUMMIES):
            dummy = RawSocket(_socket.AF_INET, _socket.SOCK_STREAM)
            dummy.setblocking(False)
            err = dummy.connect_ex(self.address)
            if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
                dummy.close()
                raise OSError(err, f"blackhole: dummy connect to {self.address} failed")
            completed = err == 0
            if not completed:
                probe = poll()
                probe.register(dummy.fileno(), POLLOUT)
                completed = bool(probe.poll(int(PROBE_SECONDS * 1000)))
            self._dummies.append((dummy, completed))
            if not completed:
                return  # the queue is full: SYNs are dropped
        raise RuntimeError(f"blackhole: {MAX_DUMMIES} dummy connections did not fill the accept queue")

    def _unplug(self, *, listen: bool) -> None:
        """Remove the dummies; listen normally again (``listen``) or stop listening."""
        hanging = [dummy for dummy, completed in self._dummies if not completed]
        connected = [dummy for dummy, completed in self._dummies if completed]
        self._dummies.clear()
        for dummy in hanging:  # before the queue has room again, so that none gets in late
            reset_close(dummy)
        dummy_addresses = {dummy.getsockname() for dummy in connected}

        def admit(sock: RawSocket, addr: Any) -> None:
            if addr in dummy_addresses:
                sock.close()
            else:
                self._admit(sock, addr)

        if listen:
            self.start_listening()
            self.accept_pending(admit)
        else:
            self.accept_pending(admit)
            self.stop_listening()
        for dummy in connected:
            reset_close(dummy)

    def _admit(self, client: RawSocket, addr: Any) -> None:
        self._accepted += 1
        if self._mode == "reset":
            self._cut += 1
            reset_close(client)
            return
        if self._mode == "close":
            self._cut += 1
            fin_close(client)
            return
        upstream = RawSocket(_socket.AF_INET, _socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            err = upstream.connect_ex(self.target)
        except OSError as exc:
            err = exc.errno or errno.EHOSTUNREACH
        link = _Link(client, upstream)
        if err == 0:
            link.connecting = False
        elif err not in (errno.EINPROGRESS, errno.EAGAIN):
            self._upstream_failed(link)
            return
        self._links.append(link)

    def _upstream_failed(self, link: _Link) -> None:
        self._upstream_failures += 1
        self._abort(link)

    def _on_accept(self, events: int) -> None:
        self.accept_pending(self._admit)

    def _on_connected(self, link: _Link) -> None:
        if link.closed:
            return
        err = link.upstream.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            self._upstream_failed(link)
            return
        link.connecting = False
        if self._forwarding:
            self._pump(link)

    def interest(self) -> Iterable[tuple[Any, int, Handler]]:
        if self.listening and not self._dummies:
            yield self.listener, POLLIN, self._on_accept
        for link in self._links:
            if link.connecting:

                def connected(events: int, link: _Link = link) -> None:
                    self._on_connected(link)

                yield link.upstream, POLLOUT, connected
                continue
            if not self._forwarding:
                continue

            def pump(events: int, link: _Link = link) -> None:
                if not link.closed:
                    self._pump(link)

            client_mask = (POLLIN if not link.client_eof and len(link.c2u) < BUFFER else 0) | (
                POLLOUT if link.u2c else 0
            )
            upstream_mask = (POLLIN if not link.upstream_eof and len(link.u2c) < BUFFER else 0) | (
                POLLOUT if link.c2u else 0
            )
            yield link.client, client_mask, pump
            yield link.upstream, upstream_mask, pump

    def _pump(self, link: _Link) -> None:
        """Move what can be moved now, both ways, without blocking; finish the link when both ends closed."""
        try:
            # client -> upstream
            if not link.client_eof and len(link.c2u) < BUFFER:
                data = _recv(link.client, BUFFER - len(link.c2u))
                if data == b"":
                    link.client_eof = True
                elif data:
                    link.c2u += data
            if link.c2u:
                del link.c2u[: _send(link.upstream, link.c2u)]
            if link.client_eof and not link.c2u and not link.upstream_shut:
                link.upstream.shutdown(_socket.SHUT_WR)
                link.upstream_shut = True
            # upstream -> client
            if not link.upstream_eof and len(link.u2c) < BUFFER:
                data = _recv(link.upstream, BUFFER - len(link.u2c))
                if data == b"":
                    link.upstream_eof = True
                elif data:
                    link.u2c += data
            if link.u2c:
                del link.u2c[: _send(link.client, link.u2c)]
            if link.upstream_eof and not link.u2c and not link.client_shut:
                link.client.shutdown(_socket.SHUT_WR)
                link.client_shut = True
        except OSError:
            # One side reset or broke: pass the reset on to the other side.
            self._abort(link)
            return
        if link.client_shut and link.upstream_shut and link.client_eof and link.upstream_eof:
            self._finish(link)

    def _finish(self, link: _Link) -> None:
        link.closed = True
        link.client.close()
        link.upstream.close()
        self._forget(link)

    def _abort(self, link: _Link) -> None:
        link.closed = True
        reset_close(link.client)
        reset_close(link.upstream)
        self._forget(link)

    def _forget(self, link: _Link) -> None:
        if link in self._links:
            self._links.remove(link)

    def _cut_all(self, *, reset: bool) -> int:
        links = list(self._links)
        for link in links:
            link.closed = True
            if reset:
                reset_close(link.client)
                reset_close(link.upstream)
            else:
                fin_close(link.client)
                fin_close(link.upstream)
        self._links.clear()
        self._cut += len(links)
        return len(links)

    def shutdown(self) -> None:
        self._cut_all(reset=False)
        for dummy, _ in self._dummies:
            reset_close(dummy)
        self._dummies.clear()
        super().shutdown()


def _recv(sock: RawSocket, size: int) -> bytes | None:
    """Bytes read, ``b""`` at end of stream, ``None`` if nothing is there yet."""
    try:
        data: bytes = sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    return data


def _send(sock: RawSocket, data: bytearray) -> int:
    try:
        sent: int = sock.send(data)
    except (BlockingIOError, InterruptedError):
        return 0
    return sent
