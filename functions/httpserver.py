"""aiohttp's HTTP server, hardened against slow, abusive and malformed clients.

aiohttp alone waits up to its keep-alive timeout (an hour by default) for a request's headers,
accepts connections until the process runs out of file descriptors, and answers a malformed
request with a text body that can echo the request while logging it at ERROR with a traceback.
:class:`HardenedServer` (a drop-in ``web.Server``) and :class:`HardenedAppRunner` (for a
``web.Application``) change that:

- a request's headers must arrive within ``header_timeout_s`` of the connection opening, or of
  the request's first byte on a kept-alive connection; an idle keep-alive ends after
  ``keepalive_timeout_s``;
- at ``max_connections`` a new connection evicts the oldest one that is not serving a request
  (idle, or still sending headers); when every connection is busy it gets a bare 503;
- a malformed request gets the usual JSON error with a request id, and logs one WARNING line of
  bounded size (never the request, never its headers), at most :data:`WARNINGS_PER_S` a second.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from .requestid import REQUEST_ID_HEADER, request_id

logger = logging.getLogger(__name__)

WARNINGS_PER_S = 20
FD_RESERVE = 64  # descriptors kept for the handler's own files, sockets and logs
_REFUSED_BODY = b'{"error":"too many open connections"}'
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_REFUSED_BODY), _REFUSED_BODY)
)
_CLIENT_FAULTS = (RequestPayloadError, HttpProcessingError, ConnectionError)
_REASON = re.compile(r"[^ -~]")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    max_connections: int | None = None
    """``None``: as many as the file-descriptor limit allows, less :data:`FD_RESERVE`."""
    lingering_s: float = 2.0
    """How long the unread rest of a refused body is drained before closing (aiohttp: 10 s)."""

    def connection_cap(self) -> int:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        by_fds = max(16, soft - FD_RESERVE) if soft != resource.RLIM_INFINITY else 1 << 20
        return min(self.max_connections or by_fds, by_fds)


class _Budget:
    """Lets at most ``per_s`` lines through a second; counts the rest for the next line."""

    def __init__(self, per_s: int) -> None:
        self.per_s = per_s
        self._second = 0
        self._used = 0
        self.suppressed = 0

    def take(self) -> bool:
        now = int(time.monotonic())
        if now != self._second:
            self._second, self._used = now, 0
        if self._used >= self.per_s:
            self.suppressed += 1
            return False
        self._used += 1
        return True


_WARNINGS = _Budget(WARNINGS_PER_S)


def warn_once(message: str, **fields: Any) -> None:
    """One WARNING line under the shared budget, with how many were suppressed before it."""
    if not _WARNINGS.take():
        return
    if _WARNINGS.suppressed:
        fields["suppressed"] = _WARNINGS.suppressed
        _WARNINGS.suppressed = 0
    logger.warning(message, extra=fields)


# aiohttp's errors that format the offending bytes into their message: a fixed reason instead.
_FIXED_REASONS = {
    "BadStatusLine": "invalid request line",
    "BadHttpMethod": "invalid method",
    "InvalidHeader": "invalid header",
    "InvalidURLError": "invalid URL",
    "LineTooLong": "request line or header too long",
}
_QUOTED = re.compile(r"\s(?:b?['\"`]).*")


def short_reason(exc: BaseException | None) -> str:
    """A parser error's description, never the request bytes aiohttp puts in its message."""
    if exc is None:
        return "malformed request"
    fixed = _FIXED_REASONS.get(type(exc).__name__)
    if fixed is not None:
        return fixed
    # llhttp's errors read "<description>:\n\n  <the bytes>\n  ^": keep the description.
    text = str(getattr(exc, "message", "") or exc)
    text = _QUOTED.sub("", text.split("\n", 1)[0].split(":", 1)[0])
    text = _REASON.sub("?", text).strip()[:120]
    if "authorization" in text.lower():
        return "malformed header"
    return text or type(exc).__name__


class HardenedHandler(RequestHandler):
    """One connection: aiohttp's protocol plus a header timeout and bounded error logging."""

    __slots__ = ("_header_handle",)

    _header_handle: asyncio.TimerHandle | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._header_handle = None
        super().connection_made(transport)
        if not self._force_close:
            self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        waiting = self._waiter is not None  # between requests: these bytes start the next one
        queued = len(self._messages)
        super().data_received(data)
        if not waiting and len(self._messages) > queued:
            self._fail_current_body()
        if self._messages:  # headers complete (the common case: in one segment, no timer)
            if self._header_handle is not None:
                self._header_handle.cancel()
                self._header_handle = None
        elif waiting and data and self._header_handle is None:
            self._arm_header_timer()

    def _fail_current_body(self) -> None:
        """A parse error in the body of the request being served belongs to that request.

        aiohttp queues it as if it were the next request and leaves the handler waiting for
        body bytes that will never parse, until its read timeout; the handler is told now.
        """
        info = self._messages[-1][0]
        request = self._current_request
        if not isinstance(info, _ErrInfo) or request is None or request.content.is_eof():
            return
        error = RequestPayloadError(info.message)
        error.__cause__ = info.exc
        request.content.set_exception(error)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_handle is not None:
            self._header_handle.cancel()
            self._header_handle = None
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        manager = self._manager
        timeout_s = manager.limits.header_timeout_s if isinstance(manager, HardenedServer) else 0
        if timeout_s > 0:
            self._header_handle = self._loop.call_later(timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_handle = None
        # Headers complete (a request is queued or being served): the timer has no say.
        if self._force_close or self._messages or self._waiter is None:
            return
        logger.debug("request headers not received in time; closing the connection")
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        rid = request_id(request.headers)
        if isinstance(exc, ConnectionError):
            # The client went away mid-request: nobody will read an answer, nothing is wrong.
            logger.debug("client disconnected during its request", extra={"event_id": rid})
            reason = "connection lost"
        elif status >= 500:
            # A fault of ours, not the client's: the traceback is for the operator's log.
            logger.error(
                "error handling request", exc_info=exc, extra={"event_id": rid, "status": status}
            )
            reason = "internal error"
        else:
            reason = short_reason(exc)
            warn_once(
                "malformed request",
                status=status,
                reason=reason,
                error=type(exc).__name__ if exc else None,
                remote=request.remote,
                event_id=rid,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        resp = web.json_response(
            {"error": reason, "request_id": rid}, status=status, headers={REQUEST_ID_HEADER: rid}
        )
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's own faults outside a handler ("Unhandled exception", a handler that
        # returned no response): one line and the traceback, never the request.
        msg = str(args[0]) if args else "aiohttp error"
        exc = kw.get("exc_info")
        if isinstance(exc, _CLIENT_FAULTS):
            # e.g. draining the rest of a body whose encoding was garbage, after the 400 went
            # out (and its warning was logged): the client's fault, already answered.
            logger.debug("%s: %s", msg[:200], short_reason(exc))
            return
        logger.error(msg[:200], exc_info=exc)


class HardenedServer(web.Server):
    """``web.Server`` with :class:`ServerLimits`; every other argument is aiohttp's."""

    def __init__(self, handler: Any, *, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        self.limits = limits or ServerLimits()
        kwargs.setdefault("keepalive_timeout", self.limits.keepalive_timeout_s)
        kwargs.setdefault("lingering_time", self.limits.lingering_s)
        super().__init__(handler, **kwargs)
        self.max_connections = self.limits.connection_cap()
        self.refused = 0
        self.evicted = 0

    def __call__(self) -> RequestHandler:
        return HardenedHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self.max_connections:
            self._make_room(handler, transport)

    def _make_room(self, newcomer: RequestHandler, transport: asyncio.Transport) -> None:
        for conn in self._connections:  # oldest first
            if conn is newcomer or conn._force_close:
                continue
            if conn._waiter is not None and not conn._messages:  # idle, or sending headers
                self.evicted += 1
                conn.force_close()
                return
        self.refused += 1
        warn_once("connection limit reached; refusing a connection", limit=self.max_connections)
        transport.write(_REFUSED)
        # Not closed here: the handler's own start-up (its task) runs after this returns and
        # expects a live connection; it finds the connection closing and ends at once.
        self._loop.call_soon(newcomer.force_close)


class HardenedAppRunner(web.AppRunner):
    """``web.AppRunner`` serving its application through a :class:`HardenedServer`."""

    def __init__(self, app: web.Application, *, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup hooks and freezes it
        return HardenedServer(
            plain.request_handler,
            limits=self._limits,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
