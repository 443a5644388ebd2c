"""Per-function ports: a TCP-level gateway, the fast path beside ``/fn/<name>/``.

Each function gets a stable port (recorded in the store, so it survives a controller restart).
A connection is spliced to the ready replica with the fewest open connections; bytes pass
untouched (X-Request-Id included), so the per-request cost is two reads and two writes instead
of parsing HTTP twice. Balancing is per connection, not per request. Framing is therefore the
replica's (it frames its own responses); this gateway only waits for the end of the first request
head before dialling a replica, within the header timeout, closes connections idle past the
keep-alive timeout, and counts connections in the controller's :class:`ConnectionGuard`.
Which replica, holding while a function comes up and retrying a refused connection are the
:class:`EndpointTable`'s (``endpoints.py``), as for ``/fn/``.

There is no bearer token here (an L4 splice cannot check one without parsing HTTP), so the
listen address decides who may call:

- the controller listens on loopback, or ``TICKRUN_PUBLIC_GATEWAY`` is on (``/fn/`` is open
  too): function ports listen on the controller's address, like a Nuclio function's own port;
- otherwise (a non-loopback controller whose gateway needs the token) function ports listen on
  loopback only, so they never open a token-free way around ``/fn/``; remote callers use
  ``/fn/<name>/`` with the token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import Callable

from tickrun.functions.httpserver_guard import (
    REFUSED,
    ConnectionGuard,
    GuardedServer,
    serve_guarded,
)
from tickrun.functions.settings import PUBLIC_GATEWAY

from .endpoints import Endpoint, EndpointTable, Miss

logger = logging.getLogger(__name__)

# A first request head longer than this is forwarded as it is (the replica refuses it).
MAX_HEAD_BYTES = 64 * 1024
# The start of a request head ("GET /…", "POST /…"): what a retiring connection's next
# request begins with (not a body chunk after a 100 Continue).
_REQUEST_LINE = re.compile(rb"[A-Z]{3,10} \S")
# An answered connection counts as idle (evictable at the connection cap) after this quiet time.
IDLE_GRACE_S = 1.0


def _http_error(status: int, reason: str, error: str, detail: str) -> bytes:
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
    )
    return head.encode() + body


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        # The client moved on to another replica (a retiring one's, between requests): what
        # this connection does from now on is no longer the client's business.
        self.detached = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.detached:
            return
        self.client.last_out = asyncio.get_running_loop().time()
        if self.client.transport is not None:
            self.client.transport.write(data)

    def eof_received(self) -> bool:
        if self.detached:
            return False
        if self.client.transport is not None and self.client.transport.can_write_eof():
            self.client.transport.write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.detached:
            return
        if self.client.transport is not None:
            self.client.transport.close()

    # The client is slow to read: stop reading from the replica until it catches up.
    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()


class _Client(asyncio.Protocol):
    """A caller's connection: its first request head is read here before a replica is dialled
    (a half-open connection costs the replica nothing), then bytes are spliced both ways."""

    def __init__(self, gateway: PortGateway, name: str) -> None:
        self.gateway = gateway
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.endpoint: Endpoint | None = None
        self.pending: list[bytes] = []
        self.head_bytes = 0
        self.head_tail = b""
        self.head_done = False
        self.eof = False
        self.last_in = self.last_out = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # Its replica is retiring (a new revision serves): the next request goes elsewhere.
        self.retiring = False

    # --- the guard's view ---------------------------------------------------------------------

    def between_requests(self) -> bool:
        # Before its first head, or answered and quiet since (then closing it loses nothing).
        return not self.head_done or self.quiet(asyncio.get_running_loop().time())

    def evict(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def stalled(self, now: float) -> bool:
        return False  # bodies are the replica's to time out: bytes here pass through untouched

    def _tick(self) -> None:
        """Header deadline, then idle keep-alive: one timer, re-armed as time moves on."""
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        guard = self.gateway.guard
        if not self.head_done:
            guard.note("header_timeout")
            self.transport.close()
            return
        now = loop.time()
        if self.last_out >= self.last_in:  # answered: the connection idles until the next head
            due = self.last_out + guard.keepalive_timeout_s
            if now >= due:
                self.transport.close()
                return
        else:  # a request is in flight (the replica's own timeouts bound it)
            due = now + guard.keepalive_timeout_s
        self._timer = loop.call_at(due, self._tick)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        guard = self.gateway.guard
        if not guard.admit(self):
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(REFUSED)  # every slot serves a request: the API's same 503
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self.last_in = self.last_out = loop.time()
        self._timer = loop.call_later(guard.header_timeout_s, self._tick)
        self.gateway.clients.add(self)

    def _head_received(self, data: bytes) -> bool:
        """True once the first request head is complete (or too long to be one: the replica
        answers that)."""
        window = self.head_tail + data
        self.head_tail = window[-3:]
        self.head_bytes += len(data)
        return b"\r\n\r\n" in window or b"\n\n" in window or self.head_bytes > MAX_HEAD_BYTES

    async def _dial(self, endpoint: Endpoint) -> tuple[Endpoint, _Upstream] | None:
        host, _, port = endpoint.url.removeprefix("http://").partition(":")
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: _Upstream(self), host, int(port))
        except OSError:
            return None  # refused: the table tries the next replica
        return endpoint, upstream

    async def _connect(self) -> None:
        assert self.transport is not None
        # The bytes read so far are kept (self.pending), so a refused dial is replayable.
        outcome = await self.gateway.endpoints.route(
            self.name, self._dial, hold_timeout_s=self.gateway.hold_timeout_s
        )
        if isinstance(outcome, Miss):
            if outcome.tried:
                msg = _http_error(
                    502, "Bad Gateway", "BadGateway", f"no replica of {self.name!r} answered"
                )
            else:
                msg = _http_error(
                    503,
                    "Service Unavailable",
                    "NoReadyReplica",
                    f"function {self.name!r} has no ready replica",
                )
            self.transport.write(msg)
            self.transport.close()
            return
        endpoint, upstream = outcome
        if self.transport.is_closing():
            if upstream.transport is not None:
                upstream.transport.close()
            return
        self.endpoint = endpoint
        endpoint.in_flight += 1
        self.upstream = upstream
        assert upstream.transport is not None
        for chunk in self.pending:
            upstream.transport.write(chunk)
        self.pending.clear()
        if self.eof and upstream.transport.can_write_eof():
            upstream.transport.write_eof()
        elif not self.eof:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        answered = self.last_out >= self.last_in
        self.last_in = asyncio.get_running_loop().time()
        if self.retiring and answered and _REQUEST_LINE.match(data):
            self.detach()  # a new request on a retiring replica's connection: dial anew
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)
            return
        self.pending.append(data)
        if not self.head_done and self._head_received(data):
            self.head_done = True
            assert self.transport is not None
            self.transport.pause_reading()  # until the replica is dialled: nothing piles up here
            self.gateway.track(asyncio.ensure_future(self._connect()))

    def eof_received(self) -> bool:
        self.eof = True
        up = self.upstream.transport if self.upstream is not None else None
        if up is not None and up.can_write_eof():
            up.write_eof()
        elif not self.head_done and self.transport is not None:
            self.transport.close()  # gone before finishing a request: nothing to answer
        return True  # half-close: the response may still be on its way

    def detach(self) -> None:
        """Leave the (retiring) replica between two requests: the caller's connection stays
        open, and its next request head is routed to a ready replica. Closing it instead would
        race a keep-alive client sending its next request (a failed request)."""
        up, self.upstream = self.upstream, None
        if up is not None:
            up.detached = True
            if up.transport is not None:
                up.transport.close()
        if self.endpoint is not None:
            self.endpoint.in_flight -= 1
            self.endpoint = None
        self.retiring = False
        self.head_done, self.head_bytes, self.head_tail = False, 0, b""

    def quiet(self, now: float) -> bool:
        """Answered and quiet for a moment (a streamed response may pause briefly)."""
        return self.last_out >= self.last_in and now - self.last_out >= IDLE_GRACE_S

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.guard.release(self)
        self.gateway.clients.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
        if self.endpoint is not None:
            self.endpoint.in_flight -= 1
            self.endpoint = None

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def listen_host(controller_host: str, *, public: bool) -> str:
    """Where function ports listen (see the module docstring)."""
    if public or is_loopback(controller_host):
        return controller_host
    return "::1" if ":" in controller_host else "127.0.0.1"


class PortGateway:
    """Constructor does no I/O; :meth:`ensure` opens (or keeps) a function's listener.

    ``host`` is the controller's listen address; function ports listen there only when it is
    loopback or ``public`` (the token-free gateway) is on, else on loopback.
    """

    def __init__(
        self,
        endpoints: EndpointTable,
        host: str,
        *,
        public: bool = False,
        hold_timeout_s: float = 30.0,
        guard: ConnectionGuard | None = None,
    ) -> None:
        self.endpoints = endpoints
        # Shared with the controller's HTTP server: one connection budget for the process.
        self.guard = (
            guard
            if guard is not None
            else ConnectionGuard(1000, header_timeout_s=10.0, keepalive_timeout_s=30.0)
        )
        self.host = listen_host(host, public=public)
        if self.host != host:
            logger.info(
                "function ports listen on loopback only: the controller is not on loopback and "
                f"the gateway needs the token ({PUBLIC_GATEWAY.name}=1 opens them)",
                extra={"controller_host": host, "listen": self.host},
            )
        self.hold_timeout_s = hold_timeout_s
        self._servers: dict[str, tuple[int, GuardedServer]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self.clients: set[_Client] = set()

    def retire(self, name: str, replica_ids: set[str]) -> int:
        """Move ``name``'s connections off the ``replica_ids`` (already unpublished): idle ones
        now, busy ones at their next request. Called until it returns 0 (connections still on
        those replicas), before they stop."""
        now = asyncio.get_running_loop().time()
        left = 0
        for client in list(self.clients):
            ep = client.endpoint
            if client.name != name or ep is None or ep.replica_id not in replica_ids:
                continue
            if client.head_done and client.quiet(now):
                client.detach()
            else:
                client.retiring = True
                left += 1
        return left

    def track(self, task: asyncio.Future[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def port_of(self, name: str) -> int | None:
        entry = self._servers.get(name)
        return entry[0] if entry else None

    def ports(self) -> list[int]:
        return [port for port, _ in self._servers.values()]

    async def ensure(self, name: str, port: int, *, on_fail: Callable[[], int]) -> int:
        """Listen for ``name`` on ``port`` (or on ``on_fail()`` if that port is taken)."""
        current = self._servers.get(name)
        if current is not None:
            return current[0]
        for candidate in (port, on_fail()):
            try:
                server = await serve_guarded(
                    self.host, candidate, lambda: _Client(self, name), self.guard
                )
            except OSError:
                logger.warning(
                    "function port taken; choosing another",
                    extra={"function": name, "port": candidate},
                )
                continue
            self._servers[name] = (candidate, server)
            return candidate
        raise OSError(f"no port for function {name}")

    async def close(self, name: str) -> None:
        entry = self._servers.pop(name, None)
        if entry is not None:
            entry[1].close()

    async def stop(self) -> None:
        for name in list(self._servers):
            await self.close(name)
        for task in list(self._tasks):
            task.cancel()
