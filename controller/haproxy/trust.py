"""The client's address as HAProxy saw it, for the controller's app behind it.

Behind HAProxy every connection to the app comes from 127.0.0.1, so anything keyed by the
client address (the wrong-token limiter in ``auth.py``, log lines) would lump every client
together: one client guessing tokens would lock everyone out. HAProxy sets the client's address
and a per-start secret on every request it sends the controller; this middleware believes the
address only with the right secret (any local process can reach the loopback port, none can read
the 0600 config), and takes both headers off, so they never reach a replica or a handler.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tickrun.functions.httpserver import request_id_of

from ..settings import Settings

CLIENT_HEADER = "X-Tickrun-Client"
SECRET_HEADER = "X-Tickrun-Front"  # noqa: S105 - a header's name
FRONT_SECRET: web.AppKey[str] = web.AppKey("haproxy_front_secret", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, settings: Settings) -> None:
    """With HAProxy possibly in front: the middleware first, and the secret HAProxy will send."""
    if settings.proxy == "python":
        return
    secret = secrets.token_urlsafe(32)
    app[FRONT_SECRET] = secret
    app.middlewares.insert(0, front_middleware(secret))


def front_middleware(secret: str) -> Any:  # aiohttp's Middleware type is not public
    expected = secret.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = request.headers
        if SECRET_HEADER not in headers and CLIENT_HEADER not in headers:
            return await handler(request)
        given = headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        client = headers.get(CLIENT_HEADER, "")
        request_id_of(request)  # minted here, so the clone's id is the one the answer carries
        trusted = hmac.compare_digest(given, expected) and client
        clone = request.clone(remote=client[:64]) if trusted else request.clone()
        # Not clone(headers=…): it re-encodes every header as strict UTF-8, and a header that
        # was not UTF-8 (kept as surrogates, which auth.py compares as bytes) would be a 500.
        clone._headers = CIMultiDictProxy(  # what request.headers returns (private)
            CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _DROPPED)
        )
        return await handler(clone)

    return middleware


_DROPPED = frozenset({CLIENT_HEADER.lower(), SECRET_HEADER.lower()})
