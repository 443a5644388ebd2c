"""aiohttp's HTTP server, hardened against slow, abusive and malformed clients.

Used by the replica's worker and by the controller (API, ``/fn/``). aiohttp alone waits up to its
keep-alive timeout (an hour by default) for a request's head, accepts connections until the
process runs out of file descriptors, and answers a malformed request with a text body that can
echo the request while logging the parser's error, which quotes the raw bytes around the fault
(often the ``Authorization`` line, token included), at ERROR with a traceback. Here:

- a request head must be complete within the guard's ``header_timeout_s`` of the connection
  opening, or of its first byte on a kept-alive connection; an idle keep-alive ends after
  ``keepalive_timeout_s``; a body that sends nothing for ``body_timeout_s`` is cut off;
- connections are counted by a :class:`~.httpserver_guard.ConnectionGuard` (at its cap the oldest
  connection between requests makes room; when all are busy the newcomer gets a bare 503) and
  accepted in batches by its listener, which backs off when descriptors run out;
- a malformed request gets a JSON error with a request id, and logs one WARNING line of bounded
  size (never the request, never its headers), at most :data:`WARNINGS_PER_S` a second.

aiohttp's private attributes are used in this module only (:class:`HardenedHandler`,
:class:`HardenedServer`, :class:`HardenedAppRunner`, :class:`HardenedSite`), checked against
aiohttp 3.14.5 (pyproject pins ``<3.15``): ``RequestHandler._manager``, ``_loop``, ``_waiter``,
``_messages``, ``_request_count``, ``_current_request``, ``_force_close``, ``_reading_paused``,
``_buffer_paused``; ``web_protocol._ErrInfo``; ``Server._loop``/``_kwargs``;
``BaseSite._runner``/``_server``; ``BaseRequest._state`` (:func:`request_id_of`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from .httpserver_guard import REFUSED, ConnectionGuard, GuardedServer, serve_guarded
from .requestid import REQUEST_ID_HEADER, request_id

logger = logging.getLogger(__name__)

WARNINGS_PER_S = 20
_CLIENT_FAULTS = (RequestPayloadError, HttpProcessingError, ConnectionError)
_REASON = re.compile(r"[^ -~]")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

ErrorBody = Callable[[int, str], dict[str, str]]
"""``(status, reason)`` → the JSON error of a request that never reached a handler."""


def plain_error_body(status: int, reason: str) -> dict[str, str]:
    return {"error": reason}


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


def request_id_of(request: web.BaseRequest) -> str:
    """This request's id: the caller's X-Request-Id when sane, else a fresh one (one per request,
    answered in X-Request-Id and every error body, and sent on by the controller's gateway)."""
    # The request's state dict directly: ``key in request`` goes through Mapping.__contains__
    # and a KeyError, a measurable share of a no-op handler's request (clone() copies the dict,
    # so a clone keeps the id).
    state = request._state
    rid: str | None = state.get(REQUEST_ID)
    if rid is None:
        rid = state[REQUEST_ID] = request_id(request.headers)
    return rid


class HardenedHandler(RequestHandler):
    """One connection: aiohttp's protocol, counted by the server's guard, with a head deadline,
    a stalled-body check and bounded error answers and logging."""

    __slots__ = (
        "_error_body",
        "_guard",
        "_head_count",
        "_head_deadline",
        "_last_data",
        "_times_data",
    )

    def __init__(self, manager: HardenedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self._error_body = manager.error_body
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_count = 0
        self._last_data = 0.0
        # Only the stalled-body check reads _last_data: without a body timeout, no clock read
        # per segment.
        self._times_data = manager.guard.body_timeout_s is not None

    # --- the guard's view -------------------------------------------------------------------

    def between_requests(self) -> bool:
        # aiohttp waits on this future only while no request is queued or being handled.
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def evict(self) -> None:
        self.force_close()

    def stalled(self, now: float) -> bool:
        timeout_s = self._guard.body_timeout_s
        request = self._current_request
        if timeout_s is None or request is None or request.content.is_eof():
            return False  # no request, or its whole body has arrived
        if self._reading_paused or self._buffer_paused:
            return False  # we stopped reading (back-pressure): the client is not at fault
        return now - self._last_data >= timeout_s

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(REFUSED)
            # Not closed here: the handler's task starts after this returns, finds the
            # connection closing and ends at once.
            self.force_close()
            return
        self._arm_head_deadline()  # a connection that never sends a byte is half-open too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._times_data:
            self._last_data = self._loop.time()
        waiter = self._waiter  # between_requests(), inline: this runs for every segment
        waiting = waiter is not None and not waiter.done()  # these bytes start the next request
        messages = self._messages
        queued = len(messages)
        count = self._request_count
        super().data_received(data)
        # A keep-alive client's next request usually arrives before aiohttp parks on its
        # waiter again, so the queue grows on most segments: only a queued parse error calls
        # out (a method call per request is a measurable share of a no-op request, issue 17).
        if not waiting and len(messages) > queued and isinstance(messages[-1][0], _ErrInfo):
            self._fail_current_body()
        if self._head_deadline is not None:
            if self._request_count != self._head_count:
                self._cancel_head_deadline()  # the head is complete
        elif waiting and self._request_count == count:
            # The first bytes of a head that is not complete yet: its deadline starts now (a
            # head that came whole in this segment, the usual case, needs no timer at all).
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        if self._guard.header_timeout_s > 0:
            self._head_count = self._request_count
            self._head_deadline = self._loop.call_later(
                self._guard.header_timeout_s, self._head_timed_out
            )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._request_count == self._head_count and not self._force_close:
            self._guard.note("header_timeout")
            self.force_close()

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

    # --- aiohttp's error hooks --------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        rid = request_id_of(request)
        if isinstance(exc, ConnectionError):
            # The client went away mid-request: nobody will read an answer, nothing is wrong.
            logger.debug("client disconnected during its request", extra={"event_id": rid})
            reason = "connection lost"
        elif status >= 500:
            # A fault of ours, not the client's: the traceback (no request bytes) is the operator's.
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
        body = {**self._error_body(status, reason), "request_id": rid}
        resp = web.json_response(body, status=status, headers={REQUEST_ID_HEADER: rid})
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
    """``web.Server`` whose connections are :class:`HardenedHandler` s counted by ``guard``;
    every other argument is aiohttp's."""

    def __init__(
        self,
        handler: Any,
        *,
        guard: ConnectionGuard,
        error_body: ErrorBody = plain_error_body,
        lingering_s: float = 2.0,
        **kwargs: Any,
    ) -> None:
        self.guard = guard
        self.error_body = error_body
        kwargs.setdefault("keepalive_timeout", guard.keepalive_timeout_s)
        # How long the unread rest of a refused body is drained before closing (aiohttp: 10 s).
        kwargs.setdefault("lingering_time", lingering_s)
        super().__init__(handler, **kwargs)

    def __call__(self) -> RequestHandler:
        return HardenedHandler(self, loop=self._loop, **self._kwargs)


class HardenedAppRunner(web.AppRunner):
    """``web.AppRunner`` serving its application through a :class:`HardenedServer`."""

    def __init__(
        self,
        app: web.Application,
        *,
        guard: ConnectionGuard,
        error_body: ErrorBody = plain_error_body,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard
        self._error_body = error_body

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup hooks and freezes it
        return HardenedServer(
            plain.request_handler,
            guard=self._guard,
            error_body=self._error_body,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


class HardenedSite(web.BaseSite):
    """A TCP site for a runner whose server is a :class:`HardenedServer`, behind the guard's
    batched accept listener."""

    __slots__ = ("_host", "_port", "_reuse_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool = False
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if not isinstance(server, HardenedServer):
            raise TypeError("HardenedSite serves a HardenedServer (HardenedAppRunner)")
        self._server = await serve_guarded(
            self._host, self._port, server, server.guard, reuse_port=self._reuse_port
        )

    @property
    def listener(self) -> GuardedServer | None:
        """The accepting listener once started (its sockets, and ``adopt`` for a socket
        accepted elsewhere)."""
        server = self._server
        return server if isinstance(server, GuardedServer) else None
