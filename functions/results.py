"""Turning whatever a Nuclio handler returns into one response shape.

The mapping follows nuclio-sdk's ``Response.from_entrypoint_output``: ``str`` → text/plain,
``dict``/``list`` → JSON, ``(status, body)``, ``context.Response(...)``; generators stream.
"""

from __future__ import annotations

import json
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nuclio_sdk

_JSON = "application/json"
_TEXT = "text/plain"


def _default(obj: Any) -> Any:
    # Same fallbacks as nuclio-sdk's encoder: numpy scalars, datetimes, objects with __log__.
    for attr in ("__log__", "item", "isoformat", "tolist"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            try:
                return fn()
            except Exception:  # noqa: S112 - try the next representation
                continue
    return str(obj)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, default=_default, separators=(",", ":")).encode()


def _body_bytes(body: Any) -> tuple[bytes, str | None]:
    """Encode a body; the second item is the content type it implies, if any."""
    if body is None:
        return b"", None
    if isinstance(body, bytes):
        return body, None
    if isinstance(body, bytearray | memoryview):
        return bytes(body), None
    if isinstance(body, str):
        return body.encode(), None
    if isinstance(body, dict | list):
        return json_bytes(body), _JSON
    return str(body).encode(), None


@dataclass(slots=True)
class Result:
    """A handler's output, ready for any trigger to send on."""

    status: int = 200
    body: bytes = b""
    content_type: str = _TEXT
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None
    value: Any = None
    """The handler's raw return value (the Kafka trigger publishes it to an output topic)."""

    def json(self) -> Any:
        return json.loads(self.body)


async def _aiter_chunks(gen: Any) -> AsyncIterator[bytes]:
    if isinstance(gen, types.AsyncGeneratorType):
        async for item in gen:
            yield _chunk(item)
    else:
        for item in gen:
            yield _chunk(item)


def _chunk(item: Any) -> bytes:
    raw = item.body if isinstance(item, nuclio_sdk.Response) else item
    return _body_bytes(raw)[0]


# The commonest answer of a stream handler, shared: results are read, never changed in place
# (triggers copy their headers), and one allocation per event is a measurable share of it.
NO_OUTPUT = Result()


def to_result(output: Any) -> Result:
    """Map a handler's return value to a :class:`Result`."""
    if output is None:
        return NO_OUTPUT
    if isinstance(output, str):
        return Result(body=output.encode(), value=output)
    if isinstance(output, dict | list):
        return Result(body=json_bytes(output), content_type=_JSON, value=output)
    if isinstance(output, tuple) and len(output) == 2:
        status, body = output
        if isinstance(body, str):
            return Result(status=int(status), body=body.encode(), value=body)
        return Result(status=int(status), body=json_bytes(body), content_type=_JSON, value=body)
    if isinstance(output, nuclio_sdk.Response):
        headers = {str(k): str(v) for k, v in (output.headers or {}).items()}
        if isinstance(output.body, types.GeneratorType | types.AsyncGeneratorType):
            return Result(
                status=int(output.status_code),
                content_type=output.content_type or _TEXT,
                headers=headers,
                stream=_aiter_chunks(output.body),
            )
        body, implied = _body_bytes(output.body)
        content_type = implied if isinstance(output.body, dict) else output.content_type
        return Result(
            status=int(output.status_code),
            body=body,
            content_type=content_type or _TEXT,
            headers=headers,
            value=output.body,
        )
    if isinstance(output, types.GeneratorType | types.AsyncGeneratorType):
        return Result(stream=_aiter_chunks(output))
    body, implied = _body_bytes(output)
    return Result(body=body, content_type=implied or _TEXT, value=output)


def exception_result(exc: nuclio_sdk.ExceptionWithResponse) -> Result:
    """A handler may raise nuclio-sdk's ``ExceptionWithResponse`` to answer with a status."""
    body, implied = _body_bytes(exc.body)
    return Result(
        status=int(exc.status_code),
        body=body,
        content_type=exc.content_type or implied or _TEXT,
        value=exc.body,
    )
