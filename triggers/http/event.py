"""Mapping between aiohttp requests/responses and nuclio-sdk events/results."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from typing import Any

from aiohttp import web
from nuclio_sdk import Event, TriggerInfo
from tickrun.functions.errors import BodyTooLargeError
from tickrun.functions.results import Result

from .config import REQUEST_ID_HEADER

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(request: web.BaseRequest) -> str:
    """The caller's X-Request-Id when it is sane, else a fresh one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and _SAFE_ID.match(given):
        return given
    return os.urandom(12).hex()


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """Read the body, refusing it past ``limit`` bytes; chunks are joined once, never re-copied."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLargeError(f"request body of {declared} bytes is over the {limit}-byte limit")
    if not request.body_exists:
        return b""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def decode_body(body: bytes, content_type: str) -> Any:
    """JSON bodies are decoded as nuclio-sdk does; undecodable ones stay bytes."""
    if content_type == "application/json" and body:
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def to_event(request: web.BaseRequest, body: bytes, event_id: str, trigger_name: str) -> Event:
    content_type = request.content_type  # without parameters such as charset
    return Event(
        body=decode_body(body, content_type),
        content_type=request.headers.get("Content-Type", content_type),
        trigger=TriggerInfo("http", trigger_name),
        fields=dict(request.query),
        headers=dict(request.headers),
        _id=event_id,
        method=request.method,
        path=request.path,
        size=len(body),
        timestamp=dt.datetime.now(dt.UTC),
        url=str(request.url),
    )


def content_type_header(content_type: str) -> str:
    if content_type.startswith("text/") and "charset" not in content_type:
        return f"{content_type}; charset=utf-8"
    return content_type


def to_response(result: Result, event_id: str) -> web.Response:
    headers = dict(result.headers)
    headers["Content-Type"] = content_type_header(result.content_type)
    headers[REQUEST_ID_HEADER] = event_id
    return web.Response(body=result.body, status=result.status, headers=headers)


def error_response(status: int, message: str, event_id: str, **extra: str) -> web.Response:
    headers = {REQUEST_ID_HEADER: event_id, **extra}
    return web.json_response(
        {"error": message, "request_id": event_id}, status=status, headers=headers
    )
