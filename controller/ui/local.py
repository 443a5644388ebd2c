"""``tickrun ui``: the web UI on a local runs store, without a controller (as ``mlflow ui``).

Runs, artifacts, the model registry and the hub work; the function pages get a 503
``NoController`` (the page says so). No login: it listens on localhost, and every write still
needs the page's CSRF token (another site open in the same browser can post to localhost); the
``Host`` header must name this machine (a DNS-rebinding page cannot reach it under its own name).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web

from tickrun.functions import settings
from tickrun.functions.errors import AuthError, TickrunError
from tickrun.functions.runs.api import add_routes as add_runs_routes
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.runs.settings import TrackingSettings

from . import extra_api
from .routes import UiConfig, local_csrf_check, mount

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _host_of(header: str) -> str:
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def make_middlewares(
    allowed_hosts: frozenset[str],
) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except TickrunError as exc:
            return web.json_response(exc.to_dict(), status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response(
                {"error": exc.reason, "detail": exc.text or exc.reason}, status=exc.status
            )
        except Exception:
            logger.exception("request failed", extra={"path": request.path[:200]})
            return web.json_response(
                {"error": "InternalError", "detail": "internal error; see the log"}, status=500
            )

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _host_of(request.headers.get("Host", "")).lower()
        if host not in allowed_hosts:
            raise AuthError("this UI answers to localhost only (Host header)")
        local_csrf_check(request)
        return await handler(request)

    return [errors, guard]


async def no_controller(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "error": "NoController",
            "detail": "no controller: `tickrun ui` shows a local runs store; functions are "
            "deployed and watched by `tickrun controller start`",
        },
        status=503,
    )


def tracking_settings(
    home: str | Path | None, env: Mapping[str, str] | None = None
) -> TrackingSettings:
    base = dict(os.environ if env is None else env)
    if home is not None:
        base[settings.HOME.name] = str(Path(home).expanduser())
        # The folder named on the command line wins over variables pointing elsewhere.
        for var in (settings.DB_URL.name, settings.ARTIFACT_PATH.name):
            base.pop(var, None)
    return TrackingSettings.from_env(base)


def create_local_app(
    settings: TrackingSettings, *, host: str = "127.0.0.1", db: SqlRunDB | None = None
) -> web.Application:
    allowed = LOCAL_HOSTS | {host.lower()}
    app = web.Application(middlewares=make_middlewares(frozenset(allowed)))
    run_db = (
        db if db is not None else SqlRunDB(settings.db_url, stale_after_s=settings.stale_after_s)
    )
    add_runs_routes(app, run_db, settings.artifact_roots())
    extra_api.add_artifact_routes(app, settings)
    try:
        from tickrun.hub.api import add_routes as add_hub_routes
    except ImportError:
        pass
    else:
        add_hub_routes(app)
    app.router.add_route("*", "/api/functions", no_controller)
    app.router.add_route("*", "/api/functions/{tail:.*}", no_controller)
    mount(app, UiConfig("local"))

    async def close(app: web.Application) -> None:
        if db is None:
            run_db.close()

    app.on_cleanup.append(close)
    return app


def serve(home: str | None, host: str, port: int) -> None:
    settings = tracking_settings(home)
    app = create_local_app(settings, host=host)
    shown = f"[{host}]" if ":" in host else host
    print(f"tickrun ui: http://{shown}:{port}/  (runs store {settings.home})", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


__all__ = ["create_local_app", "serve", "tracking_settings"]
