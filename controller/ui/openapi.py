"""The UI's routes in the controller's OpenAPI document (controller/openapi.py merges these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_STR = {"type": "string"}
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
    open_get = {"security": []}
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
        "/ui/logout": {
            "post": {
                "summary": "end the session (X-CSRF-Token) and clear the cookie",
                "responses": {"200": json({"type": "object"}, "logged out")},
                **open_get,
            }
        },
    }


__all__ = ["openapi_paths"]
