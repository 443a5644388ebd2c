"""Mapping between aiohttp requests/responses and nuclio-sdk events/results."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError
from nuclio_sdk import Event, TriggerInfo

from tickrun.functions import jsonbody
from tickrun.functions.errors import BadRequestError, BodyTooLargeError, RequestTimeoutError
from tickrun.functions.httpresponse import FramedResponse
from tickrun.functions.httpserver import short_reason, warn_once
from tickrun.functions.results import Result

from .config import REQUEST_ID_HEADER
from .headers import response_headers, wire_safe


async def read_body(request: web.BaseRequest, limit: int, idle_timeout_s: float) -> bytes:
    """Read the body, refusing it past ``limit`` bytes or after ``idle_timeout_s`` without data.

    Chunks are joined once, never re-copied.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLargeError(f"request body of {declared} bytes is over the {limit}-byte limit")
    if not request.body_exists:
        return b""
    content = request.content
    if content.is_eof():  # all of it arrived with the headers (most small requests): no waiting
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyTooLargeError(f"request body is over the {limit}-byte limit")
        return body
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(idle_timeout_s) as deadline:
            async for chunk in content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLargeError(f"request body is over the {limit}-byte limit")
                chunks.append(chunk)
                deadline.reschedule(loop.time() + idle_timeout_s)
    except TimeoutError as exc:
        raise RequestTimeoutError(
            f"no request body data for {idle_timeout_s:g} s; request abandoned"
        ) from exc
    except RequestPayloadError as exc:  # bad chunk framing or Content-Encoding, mid-body
        reason = short_reason(exc.__cause__ or exc)
        raise BadRequestError(f"request body cannot be read: {reason}") from exc
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def decode_body(body: bytes, content_type: str) -> Any:
    """JSON bodies are decoded as nuclio-sdk does; undecodable ones stay bytes.

    JSON that cannot be decoded safely (nested too deeply, an integer too long) is refused
    with :class:`~tickrun.functions.jsonbody.UnsafeJsonError` (400): handing the handler bytes
    it was told are JSON would only move the failure into user code.
    """
    if content_type == "application/json" and body:
        try:
            return jsonbody.loads(body)
        except jsonbody.UnsafeJsonError:
            raise
        except ValueError:
            return body
    return body


_UNBUILT: dict[str, Any] = {"_headers": None, "_fields": None, "_url": None, "_timestamp": None}
_CONSTANT: dict[str, Any] = {
    "shard_id": None,
    "num_shards": None,
    "type": None,
    "type_version": None,
    "version": None,
    "last_in_batch": False,
    "offset": 0,
    "topic": None,
}


class HttpEvent(Event):  # type: ignore[misc]
    """nuclio-sdk's ``Event`` for an HTTP request, building its copies of the request on first use.

    Copying headers and query into dicts and rendering the URL cost more than a no-op handler;
    most handlers read one or two of them. Everything nuclio-sdk's Event has is here, with the
    same names and types, and ``to_json`` includes it all.
    """

    _LAZY = ("headers", "fields", "url", "timestamp")
    _headers: dict[str, str] | None
    _fields: dict[str, str] | None
    _url: str | None
    _timestamp: dt.datetime | None

    def __init__(
        self, request: web.BaseRequest, body: bytes, event_id: str, trigger_name: str
    ) -> None:
        # Event.__init__ is not called: it would build the lazy fields eagerly.
        # The constant fields go in with one dict update each, in the order they always had
        # (``to_json`` and ``vars(event)`` list them as before).
        content_type = request.headers.get("Content-Type", "")
        self._request = request
        self._received_s = time.time()
        self.__dict__.update(_UNBUILT)
        if body and content_type:  # only a body with a type can decode to something else
            self.body = decode_body(body, content_type.split(";", 1)[0].strip().lower())
        else:
            self.body = body
        self.content_type = content_type
        self.trigger = TriggerInfo("http", trigger_name)
        self.id = event_id
        self.method = request.method
        self.path = request.path
        self.size = len(body)
        self.__dict__.update(_CONSTANT)

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = dict(self._request.headers)
        return self._headers

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self._headers = value

    @property
    def fields(self) -> dict[str, str]:
        if self._fields is None:
            self._fields = dict(self._request.query)
        return self._fields

    @fields.setter
    def fields(self, value: dict[str, str]) -> None:
        self._fields = value

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = str(self._request.url)
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        self._url = value

    @property
    def timestamp(self) -> dt.datetime:
        if self._timestamp is None:
            self._timestamp = dt.datetime.fromtimestamp(self._received_s, dt.UTC)
        return self._timestamp

    @timestamp.setter
    def timestamp(self, value: dt.datetime) -> None:
        self._timestamp = value

    def to_json(self) -> str:
        obj = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        obj.update({name: getattr(self, name) for name in self._LAZY})
        obj["trigger"] = {"kind": self.trigger.kind, "name": self.trigger.name}
        obj["timestamp"] = str(self.timestamp)
        if isinstance(obj["body"], bytes):
            obj["body"] = base64.b64encode(obj["body"]).decode("ascii")
        return json.dumps(obj, default=str)


def to_event(request: web.BaseRequest, body: bytes, event_id: str, trigger_name: str) -> Event:
    return HttpEvent(request, body, event_id, trigger_name)


def content_type_header(content_type: str) -> str:
    if content_type.startswith("text/") and "charset" not in content_type:
        return f"{content_type}; charset=utf-8"
    return content_type


def _headers(result: Result, event_id: str) -> dict[str, str]:
    """The one place a result's headers become response headers: the server frames the body."""
    headers: dict[str, str] = {}
    if result.headers:
        headers, dropped = response_headers(result.headers)
        if dropped:
            warn_once(
                "dropped response headers that cannot be sent",
                event_id=event_id,
                headers=[n[:64] for n in dropped[:8]],
            )
    content_type = result.content_type
    headers["Content-Type"] = _CONTENT_TYPES.get(content_type) or (
        content_type_header(content_type) if wire_safe("Content-Type", content_type) else _OCTETS
    )
    headers[REQUEST_ID_HEADER] = event_id
    return headers


def _valid_status(result: Result, event_id: str) -> web.Response | None:
    if 200 <= result.status <= 599:
        return None
    # A 1xx or out-of-range final status cannot be framed; it is the handler's error.
    return error_response(500, f"handler returned HTTP status {result.status}", event_id)


def to_response(result: Result, event_id: str) -> web.Response:
    status = result.status
    if not result.headers and 200 <= status <= 599:
        # The commonest answer (no handler headers, a usual content type): _headers' result
        # without its checks, which only apply to handler-given headers and content types.
        content_type = _CONTENT_TYPES.get(result.content_type)
        if content_type is not None:
            # Into the response's own (empty) header map: a dict of headers is copied into a
            # new map, each name case-folded on the way.
            response = FramedResponse(body=result.body, status=status)
            headers = response.headers
            headers[_CONTENT_TYPE] = content_type
            headers[REQUEST_ID_HEADER] = event_id
            return response
    return _valid_status(result, event_id) or FramedResponse(
        body=result.body, status=result.status, headers=_headers(result, event_id)
    )


def stream_response(result: Result, event_id: str) -> web.StreamResponse:
    """A chunked response for a streaming result; the caller prepares it and writes the chunks."""
    invalid = _valid_status(result, event_id)
    if invalid is not None:
        return invalid
    resp = web.StreamResponse(status=result.status, headers=_headers(result, event_id))
    resp.enable_chunked_encoding()
    return resp


_CONTENT_TYPES = {
    "text/plain": "text/plain; charset=utf-8",
    "application/json": "application/json",
}
_OCTETS = "application/octet-stream"
_CONTENT_TYPE = hdrs.CONTENT_TYPE


def error_response(status: int, message: str, event_id: str, **extra: str) -> web.Response:
    headers = {REQUEST_ID_HEADER: event_id, **extra}
    return web.json_response(
        {"error": message, "request_id": event_id}, status=status, headers=headers
    )
