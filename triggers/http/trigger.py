"""The HTTP trigger: aiohttp requests in, handler results out, Nuclio's status codes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

from aiohttp import web

from tickrun.functions.errors import (
    EventTimeoutError,
    TickrunError,
    WorkerUnavailableError,
)
from tickrun.functions.httpserver import request_id_of, warn_once
from tickrun.functions.interfaces import HandlerFailure
from tickrun.functions.results import Result
from tickrun.functions.spec import FunctionSpec

from ..base import BaseTrigger
from .config import REQUEST_ID_HEADER, HttpConfig
from .event import (
    HttpEvent,
    error_response,
    read_body,
    stream_response,
    to_response,
)
from .spec import HttpTriggerSpec

if TYPE_CHECKING:
    from tickrun.functions.interfaces import Dispatcher, TriggerHost

logger = logging.getLogger(__name__)


class HttpTrigger(BaseTrigger[HttpTriggerSpec]):
    kind: ClassVar[str] = "http"

    def __init__(self, spec: HttpTriggerSpec, function: FunctionSpec) -> None:
        super().__init__(spec, function)
        self.config = HttpConfig.from_spec(spec)
        self._dispatcher: Dispatcher | None = None

    async def start(self, host: TriggerHost) -> None:
        self._dispatcher = host.dispatcher(self.spec)
        host.mount_http(self.handle)

    async def stop(self, drain_timeout_s: float) -> None:
        # The processor's server drains HTTP connections; nothing of the trigger's own is open.
        self._dispatcher = None

    def _cors(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        origins = self.config.cors_origins
        origin = request.headers.get("Origin")
        if origins is None or origin is None:
            return
        if "*" in origins or origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin if "*" not in origins else "*"
            response.headers["Access-Control-Expose-Headers"] = REQUEST_ID_HEADER

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        event_id = request_id_of(request)  # the id handle_error answers with too
        dispatcher = self._dispatcher
        if dispatcher is None:
            return error_response(503, "function is shutting down", event_id)
        config = self.config
        method = request.method
        if method == "CONNECT":
            # A 2xx to CONNECT turns the connection into a tunnel: a function is not a proxy.
            resp = error_response(405, "CONNECT is not supported", event_id, Connection="close")
            resp.force_close()
            return resp
        if method == "OPTIONS" and config.cors_origins is not None:
            resp = web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": config.cors_methods,
                    "Access-Control-Allow-Headers": config.cors_headers,
                    "Access-Control-Max-Age": str(config.cors_max_age_s),
                    REQUEST_ID_HEADER: event_id,
                },
            )
            self._cors(request, resp)
            return resp
        try:
            # No body (a GET, most no-op calls): no read_body coroutine. A Content-Length over
            # the limit means a body, so read_body still refuses it.
            if request.body_exists:
                body = await read_body(request, config.max_body_bytes, config.body_idle_timeout_s)
            else:
                body = b""
        except TickrunError as exc:  # too large, stalled or garbled (413, 408, 400)
            if exc.status == 400:
                warn_once("malformed request body", reason=exc.message, event_id=event_id)
            # The unread or unparsable remainder of the body makes the connection unusable.
            resp = error_response(exc.status, exc.message, event_id, Connection="close")
            resp.force_close()
            return resp
        try:
            result = await dispatcher.dispatch(HttpEvent(request, body, event_id, self.name))
        except WorkerUnavailableError as exc:
            return error_response(503, exc.message, event_id, **{"Retry-After": "1"})
        except EventTimeoutError as exc:
            return error_response(504, exc.message, event_id)
        except HandlerFailure as exc:
            return error_response(500, exc.message, event_id)
        except TickrunError as exc:
            return error_response(exc.status, exc.message, event_id)
        if result.stream is not None:
            return await self._stream(request, result, event_id)
        response = to_response(result, event_id)
        if config.cors_origins is not None:
            self._cors(request, response)
        return response

    async def _stream(
        self, request: web.BaseRequest, result: Result, event_id: str
    ) -> web.StreamResponse:
        if result.stream is None:  # pragma: no cover - the caller checked
            return to_response(result, event_id)
        resp = stream_response(result, event_id)
        if isinstance(resp, web.Response):  # refused (an unframeable status): nothing to stream
            return resp
        if self.config.cors_origins is not None:
            self._cors(request, resp)
        await resp.prepare(request)
        try:
            async for chunk in result.stream:
                await resp.write(chunk)
        except Exception:
            # Headers are gone already; the log has the cause, the client sees a cut stream.
            logger.exception("streaming handler output failed", extra={"event_id": event_id})
            resp.force_close()
            return resp
        await resp.write_eof()
        return resp
