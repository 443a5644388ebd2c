"""The controller's HTTP edge against slow, abusive and malformed clients.

Every client connection (API, ``/fn/`` and the function ports) is counted by one
:class:`ConnectionGuard`. At its cap a new connection closes the oldest one that is between
requests (half-open, unfinished head or idle keep-alive) instead of being refused, so a flood of
half-open connections cannot lock out ``/healthz`` or a real caller, and the descriptors never run
out (the cap follows ``RLIMIT_NOFILE``: past it, accept() fails and everything resets).

:class:`GuardedRequestHandler` is aiohttp's connection handler with what aiohttp lacks: a deadline
for an unfinished request head (aiohttp's keep-alive timer starts at connect and after a response,
so a client trickling bytes keeps a slot for the whole keep-alive), and a malformed-request answer
that is JSON and logs one short WARNING. aiohttp's own answer logs the parser's error at ERROR with
a traceback, and that error quotes the raw request bytes around the fault: often the
``Authorization`` line, token included. Its 400 body echoed the same bytes.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from tickrun.functions.requestid import REQUEST_ID_HEADER, request_id

logger = logging.getLogger(__name__)

# Descriptors kept for everything but client connections: the store, logs, replicas' pipes.
FD_RESERVE = 64
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
MAX_REASON_CHARS = 200
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


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


def connection_budget(max_connections: int, soft_fd_limit: int | None = None) -> int:
    """How many client connections fit: a connection through a gateway holds two descriptors."""
    if soft_fd_limit is None:
        soft_fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_fd_limit == resource.RLIM_INFINITY:
        return max_connections
    return max(8, min(max_connections, (soft_fd_limit - FD_RESERVE) // 2))


class Guarded(Protocol):
    def between_requests(self) -> bool:
        """True when no request is being read or answered (it may be closed to make room)."""

    def evict(self) -> None:
        """Close now."""

    def stalled(self, now: float) -> bool:
        """True when a request body has sent nothing for the body timeout."""


class ConnectionGuard:
    """Counts client connections; at ``limit`` the oldest one between requests makes room."""

    def __init__(
        self,
        limit: int,
        *,
        header_timeout_s: float,
        keepalive_timeout_s: float,
        body_timeout_s: float = 30.0,
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
        if self._sweep is None:
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


def request_id_of(request: web.BaseRequest) -> str:
    """This request's id: the caller's X-Request-Id when sane, else a fresh one (one per request,
    sent to the replica by the gateway and answered in X-Request-Id and every error body)."""
    if REQUEST_ID not in request:
        request[REQUEST_ID] = request_id(request.headers)
    return request[REQUEST_ID]


def _reason(exc: BaseException | None) -> str:
    """The kind of fault, never its text: parser messages quote the raw request."""
    return type(exc).__name__[:MAX_REASON_CHARS] if exc is not None else "unknown"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's handler, counted by a guard, with a head deadline and JSON error answers."""

    __slots__ = ("_guard", "_head_count", "_head_deadline", "_last_data")

    def __init__(self, manager: Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=guard.keepalive_timeout_s, **kwargs)
        self._guard = guard
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_count = 0
        self._last_data = 0.0

    def between_requests(self) -> bool:
        # aiohttp waits on this future only while no request is queued or being handled.
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def evict(self) -> None:
        self.force_close()

    def stalled(self, now: float) -> bool:
        request = self._current_request
        if request is None or request.content.is_eof():
            return False  # no request, or its whole body has arrived
        if self._reading_paused or self._buffer_paused:
            return False  # we stopped reading (back-pressure): the client is not at fault
        return now - self._last_data >= self._guard.body_timeout_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_data = self._loop.time()
        if self._head_deadline is None and self.between_requests():
            # The first bytes of a request head: the whole head must follow in time.
            self._head_count = self._request_count
            self._head_deadline = self._loop.call_later(
                self._guard.header_timeout_s, self._head_timed_out
            )
        super().data_received(data)
        if self._head_deadline is not None and self._request_count != self._head_count:
            self._cancel_head_deadline()

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._request_count == self._head_count and self.transport is not None:
            self._guard.note("header_timeout")
            self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            # A body the client broke, found while draining it after the answer: its fault, and
            # the exception's text quotes the raw bytes.
            logger.warning("malformed request body", extra={"reason": _reason(exc)})
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # A bug, not bad input: the traceback is the operator's (it quotes no request bytes).
            logger.error("request failed", exc_info=exc, extra={"status": status})
            error, detail = "InternalError", "internal error; see the controller log"
        else:
            logger.warning(
                "malformed request",
                extra={"status": status, "reason": _reason(exc), "remote": request.remote},
            )
            error, detail = "BadRequest", f"malformed HTTP request ({_reason(exc)})"
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; closing the connection")
        rid = request_id({})
        body = json.dumps({"error": error, "detail": detail, "request_id": rid})
        resp = web.Response(
            status=status,
            text=body,
            content_type="application/json",
            headers={REQUEST_ID_HEADER: rid},
        )
        resp.force_close()
        return resp


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host`` (every address it resolves to)."""
    # "" means every interface, as in asyncio's create_server.
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    """A listener that accepts in small batches and backs off when descriptors run out (the
    connection stays queued in the kernel instead of being dropped, as libuv does)."""

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
    host: str, port: int, factory: Callable[[], asyncio.Protocol], guard: ConnectionGuard
) -> GuardedServer:
    server = GuardedServer(listen_sockets(host, port), factory, guard)
    await server.start_serving()
    return server


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are :class:`GuardedRequestHandler` s behind a
    :class:`GuardedServer`."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None  # the runner is set up before its sites start
        guard = self._guard

        def factory() -> GuardedRequestHandler:
            # Bodies stay as sent: /fn/ forwards them with their Content-Encoding.
            return GuardedRequestHandler(
                server, guard=guard, loop=loop, access_log=None, auto_decompress=False
            )

        self._server = await serve_guarded(self._host, self._port, factory, guard)
