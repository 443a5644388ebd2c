"""Connection accounting and accepting for every tickrun HTTP listener (no HTTP in here).

:class:`ConnectionGuard` counts client connections. At its cap a new connection closes the oldest
one that is between requests (half-open, unfinished head or idle keep-alive) instead of being
refused, so a flood of half-open connections cannot lock out ``/healthz`` or a real caller; only
when every connection is serving a request is the newcomer refused. The cap follows
``RLIMIT_NOFILE`` (past it, accept() fails and everything resets).

:class:`GuardedServer` is the listener: it accepts in small batches and backs off when descriptors
run out (the connection stays queued in the kernel instead of being dropped, as libuv does).
The aiohttp side (the per-connection handler) is in :mod:`.httpserver`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

# Descriptors kept for everything but client connections: the store, logs, pipes, handler files.
FD_RESERVE = 64
MIN_CONNECTIONS = 8  # never below a usable minimum, however low the descriptor limit
# A busy-but-sane soft limit to raise to (as Go's runtime does at start); the hard limit wins.
FD_TARGET = 65536
REPORT_INTERVAL_S = 10.0
SWEEP_INTERVAL_S = 1.0
# Connections accepted per wake-up of a listener: an evicted connection's descriptor is released
# on a later loop turn, so an unbounded accept burst would still run out of descriptors.
ACCEPT_BATCH = 16
ACCEPT_BACKOFF_S = 0.05
LISTEN_BACKLOG = 1024
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_REFUSED_BODY = b'{"error":"too many open connections"}'
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_REFUSED_BODY), _REFUSED_BODY)
)
"""The whole answer to a connection refused at the cap (written before any request is read)."""


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards the hard one; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_TARGET if hard == resource.RLIM_INFINITY else min(hard, FD_TARGET)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass  # keep the limit we were given
    return soft


def connection_cap(
    max_connections: int | None,
    *,
    fds_per_connection: int = 1,
    soft_fd_limit: int | None = None,
) -> int:
    """How many client connections fit in the descriptor limit, at most ``max_connections``
    (``None``: as many as fit). A connection spliced to an upstream holds two descriptors."""
    if soft_fd_limit is None:
        soft_fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_fd_limit == resource.RLIM_INFINITY:
        return max_connections or 1 << 20
    by_fds = max(MIN_CONNECTIONS, (soft_fd_limit - FD_RESERVE) // fds_per_connection)
    return min(max_connections or by_fds, by_fds)


class Guarded(Protocol):
    def between_requests(self) -> bool:
        """True when no request is being read or answered (it may be closed to make room)."""

    def evict(self) -> None:
        """Close now."""

    def stalled(self, now: float) -> bool:
        """True when a request body has sent nothing for the body timeout."""


class ConnectionGuard:
    """Counts client connections; at ``limit`` the oldest one between requests makes room.

    ``body_timeout_s=None`` leaves request bodies to the handler's own read timeout.
    """

    def __init__(
        self,
        limit: int,
        *,
        header_timeout_s: float,
        keepalive_timeout_s: float,
        body_timeout_s: float | None = 30.0,
    ) -> None:
        self.limit = limit
        self.header_timeout_s = header_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.body_timeout_s = body_timeout_s
        self._sweep: asyncio.TimerHandle | None = None
        self._open: dict[Guarded, None] = {}  # insertion order: oldest first
        self._closed: Counter[str] = Counter()
        self._reported_at = 0.0
        self._report: asyncio.TimerHandle | None = None

    @property
    def open_count(self) -> int:
        return len(self._open)

    def admit(self, conn: Guarded) -> bool:
        """Count ``conn`` in; False when every slot is busy with a request (close ``conn``)."""
        if len(self._open) >= self.limit:
            victim = next((c for c in self._open if c.between_requests()), None)
            if victim is None:
                self.note("refused_at_cap")
                return False
            self.release(victim)
            victim.evict()
            self.note("evicted_at_cap")
        self._open[conn] = None
        if self._sweep is None and self.body_timeout_s is not None:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweeper)
        return True

    def _sweeper(self) -> None:
        """Close connections whose request body stalled (a slow POST holds a slot that the cap
        cannot take back, as it is mid-request)."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in [c for c in self._open if c.stalled(now)]:
            self.release(conn)
            conn.evict()
            self.note("body_timeout")
        if self._open:
            self._sweep = loop.call_later(SWEEP_INTERVAL_S, self._sweeper)

    def release(self, conn: Guarded) -> None:
        self._open.pop(conn, None)

    def note(self, reason: str) -> None:
        """Count a connection closed for ``reason``; reported in one line per interval."""
        self._closed[reason] += 1
        now = time.monotonic()
        if now - self._reported_at >= REPORT_INTERVAL_S:
            self._flush()
        elif self._report is None:
            loop = asyncio.get_running_loop()
            self._report = loop.call_later(self._reported_at + REPORT_INTERVAL_S - now, self._flush)

    def _flush(self) -> None:
        self._report = None
        if not self._closed:
            return
        self._reported_at = time.monotonic()
        logger.warning(
            "closed connections of slow or abusive clients",
            extra={"closed": dict(self._closed), "open": len(self._open), "limit": self.limit},
        )
        self._closed.clear()

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._report is not None:
            self._report.cancel()
            self._report = None
        self._flush()


def listen_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host`` (every address it resolves to)."""
    # "" means every interface, as in asyncio's create_server.
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:  # worker processes of one replica share its port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class GuardedServer(asyncio.AbstractServer):
    """A listener that accepts in small batches and backs off when descriptors run out."""

    def __init__(
        self,
        socks: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        guard: ConnectionGuard,
    ) -> None:
        self._socks = socks
        self._factory = factory
        self._guard = guard
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._socks)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if not self._serving:
            self._serving = True
            for sock in self._socks:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def serve_forever(self) -> None:
        await self.start_serving()
        await asyncio.Event().wait()

    def close(self) -> None:
        self._serving = False
        for sock in self._socks:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _resume(self, sock: socket.socket) -> None:
        if self._serving and sock.fileno() >= 0:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    # Leave the rest queued until closing connections give descriptors back.
                    self._guard.note("accept_deferred")
                    self._loop.remove_reader(sock.fileno())
                    self._loop.call_later(ACCEPT_BACKOFF_S, self._resume, sock)
                    return
                continue  # ECONNABORTED and kin: that client is gone already
            conn.setblocking(False)
            self.adopt(conn)

    def adopt(self, conn: socket.socket) -> None:
        """Serve ``conn`` (non-blocking, accepted elsewhere) as if this listener accepted it."""
        if not self._serving:
            conn.close()
            return
        task = self._loop.create_task(self._serve(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            transport, _ = await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()
            return
        used = transport.get_extra_info("socket")
        if used is None or used.fileno() != conn.fileno():
            conn.close()  # uvloop serves a duplicate of the descriptor: drop ours


async def serve_guarded(
    host: str,
    port: int,
    factory: Callable[[], asyncio.Protocol],
    guard: ConnectionGuard,
    *,
    reuse_port: bool = False,
) -> GuardedServer:
    server = GuardedServer(listen_sockets(host, port, reuse_port=reuse_port), factory, guard)
    await server.start_serving()
    return server
