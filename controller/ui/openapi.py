"""The UI's routes in the controller's OpenAPI document (controller/openapi.py merges these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_STR = {"type": "string"}
_NAME = {"name": "name", "in": "path", "required": True, "schema": _STR}
_SESSION = {
    "type": "object",
    "properties": {
        "mode": {"type": "string", "enum": ["controller", "local"]},
        "csrf": {"type": "string", "description": "send as X-CSRF-Token on writes"},
        "expires": {"type": ["integer", "null"], "description": "unix seconds"},
    },
}


def openapi_paths(op: Callable[..., dict[str, Any]], json: Callable[..., Any]) -> dict[str, Any]:
    page = {"description": "the page", "content": {"text/html": {"schema": _STR}}}
    open_get: dict[str, Any] = {"security": []}
    return {
        "/": {
            "get": {"summary": "the web UI (index.html)", "responses": {"200": page}, **open_get}
        },
        "/index.html": {
            "get": {"summary": "the web UI (index.html)", "responses": {"200": page}, **open_get}
        },
        "/ui/static/{path}": {
            "get": {
                "summary": "a file of the web UI (ETag; ?v= for a year's cache)",
                "parameters": [
                    {"name": "path", "in": "path", "required": True, "schema": _STR},
                ],
                "responses": {"200": {"description": "the file"}, "304": {"description": "same"}},
                **open_get,
            }
        },
        "/ui/session": {
            "get": {
                "summary": "the browser's session and CSRF token (401 when not logged in)",
                "responses": {"200": json(_SESSION, "the session")},
                **open_get,
            }
        },
        "/ui/login": {
            "post": {
                "summary": "log in with the controller token (JSON or form); sets the cookie",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"token": _STR}}
                        },
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "properties": {"token": _STR}}
                        },
                    },
                },
                "responses": {"200": json(_SESSION, "logged in")},
                **open_get,
            }
        },
        "/api/functions/{name}/metrics": {
            "get": op(
                "request rate, error rate, latency p50/p99 from the replicas' /metrics; Kafka "
                "lag per partition (?kafka=0 skips it)",
                json({"type": "object"}, "the function's live numbers"),
                404,
                params=[_NAME],
            )
        },
        "/api/functions/{name}/logs/follow": {
            "get": op(
                "log lines since ?cursor= (long poll up to ?wait= seconds); ?tail=, ?replica=",
                json(
                    {
                        "type": "object",
                        "properties": {"replicas": {"type": "array"}, "cursor": _STR},
                    },
                    "new lines per replica and the next cursor",
                ),
                400,
                404,
                params=[_NAME],
            )
        },
        "/ui/logout": {
            "post": {
                "summary": "end the session (X-CSRF-Token) and clear the cookie",
                "responses": {"200": json({"type": "object"}, "logged out")},
                **open_get,
            }
        },
    }


__all__ = ["openapi_paths"]
