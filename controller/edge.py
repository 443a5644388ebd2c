"""The controller's side of the hardened HTTP edge (the machinery is :mod:`tickrun.functions.
httpserver` and :mod:`tickrun.functions.httpserver_guard`, shared with the replicas).

What is the controller's own: one :class:`ConnectionGuard` counts every client connection of the
process (API, ``/fn/`` and the function ports), sized from ``RLIMIT_NOFILE`` at two descriptors a
connection (a gateway's connection holds an upstream one too), with its deadlines from the
settings; and malformed requests answered in the controller API's error shape.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tickrun.functions.httpserver import HardenedAppRunner
from tickrun.functions.httpserver_guard import ConnectionGuard, connection_cap

from .settings import Settings


def connection_budget(max_connections: int, soft_fd_limit: int | None = None) -> int:
    """How many client connections fit: a connection through a gateway holds two descriptors."""
    budget: int = connection_cap(max_connections, fds_per_connection=2, soft_fd_limit=soft_fd_limit)
    return budget


def make_guard(settings: Settings) -> ConnectionGuard:
    """The process's one guard (no I/O: the loop is found when the first connection comes)."""
    return ConnectionGuard(
        connection_budget(settings.max_connections),
        header_timeout_s=settings.header_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )


def error_body(status: int, reason: str) -> dict[str, str]:
    """A request that never reached the app, in the API's error shape (as ``app._error``)."""
    if status >= 500:
        return {"error": "InternalError", "detail": "internal error; see the controller log"}
    return {"error": "BadRequest", "detail": f"malformed HTTP request ({reason})"}


def make_runner(app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> HardenedAppRunner:
    # Bodies stay as sent: /fn/ forwards them with their Content-Encoding.
    return HardenedAppRunner(
        app, guard=guard, error_body=error_body, access_log=None, auto_decompress=False, **kwargs
    )
