"""The controller's aiohttp application: middlewares (errors → JSON, bearer auth), the REST API,
the gateway, and the start/stop order of the components behind them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from tickrun.functions.errors import TickrunError

from tickrun import __version__

from . import api
from .auth import check_bearer, load_or_create_token
from .builder import Builder
from .builder.engine import Engine
from .gateway import Gateway
from .openapi import OPENAPI_PATH, document
from .platforms.base import Platform
from .platforms.container import ContainerPlatform
from .platforms.process import ProcessPlatform
from .portgateway import PortGateway
from .reconciler import Reconciler
from .service import FunctionService
from .settings import Settings
from .store import Store

logger = logging.getLogger(__name__)

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
OPEN_PATHS = {"/healthz", OPENAPI_PATH}
# The hub catalogue is read-only and public (remote hub clients send no token).
OPEN_PREFIXES = ("/api/hub",)
MAX_REQUEST_BYTES = 96 * 1024 * 1024  # a deploy carries the code archive (64 MiB max) in base64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TickrunError as exc:
        return web.json_response(exc.to_dict(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(
            {"error": exc.reason, "detail": exc.text or exc.reason},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception:
        logger.exception("request failed", extra={"path": request.path, "method": request.method})
        return web.json_response(
            {"error": "InternalError", "detail": "internal error; see the controller log"},
            status=500,
        )


def auth_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
        if not open_path and not (settings.public_gateway and path.startswith("/fn/")):
            check_bearer(request.headers.get("Authorization"), request.app[TOKEN])
        return await handler(request)

    return middleware


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def version(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "version": __version__,
            "platforms": sorted(request.app[api.SERVICE].platforms),
            "default_platform": settings.default_platform,
        }
    )


def _platforms(settings: Settings, builder: Builder) -> dict[str, Platform]:
    platforms: dict[str, Platform] = {"process": ProcessPlatform()}
    engine_name = settings.engine()
    if engine_name is not None and engine_name != "buildah":
        platforms["container"] = ContainerPlatform(Engine(engine_name))
    return platforms


def create_app(settings: Settings) -> web.Application:
    """Wire the components (no I/O here; it all happens in the startup hook)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(settings)], client_max_size=MAX_REQUEST_BYTES
    )
    store = Store(settings.database_url)
    builder = Builder(settings)
    platforms = _platforms(settings, builder)
    service = FunctionService(settings, store, builder, platforms)
    app[SETTINGS] = settings
    app[api.STORE] = store
    app[api.SERVICE] = service
    app[api.STOPPING] = asyncio.Event()
    app.router.add_get("/healthz", healthz)
    app.router.add_get(OPENAPI_PATH, openapi)
    app.router.add_get("/api/version", version)
    api.add_routes(app)
    _mount_runs(app, settings)
    _mount_hub(app)

    async def startup(app: web.Application) -> None:
        t0 = time.monotonic()
        app[TOKEN] = load_or_create_token(settings)
        for d in (settings.code_dir, settings.logs_dir, settings.builds_dir):
            d.mkdir(parents=True, exist_ok=True)
        store.open()
        controller_id = store.controller_id()
        for platform in platforms.values():
            platform.controller_id = controller_id  # type: ignore[attr-defined]
        reconciler = Reconciler(settings, store, service, platforms, controller_id)
        gateway = Gateway(reconciler, store)
        if settings.function_ports:
            reconciler.port_gateway = PortGateway(
                reconciler, settings.host, public=settings.public_gateway
            )
        app[api.RECONCILER] = reconciler
        service.on_change = reconciler.wake
        service.on_delete = reconciler.forget
        app[GATEWAY] = gateway
        await reconciler.start()
        await gateway.start()
        # After adoption: the replicas of a half-deleted function are known, so they stop.
        await service.finish_deletes()
        await service.resume_builds()
        logger.info(
            "controller started",
            extra={
                "state_dir": str(settings.state_dir),
                "platforms": sorted(platforms),
                "controller_id": controller_id,
                "startup_s": round(time.monotonic() - t0, 3),
            },
        )

    async def shutdown(app: web.Application) -> None:
        # Runs before aiohttp waits for open requests: end builds and log followers now.
        app[api.STOPPING].set()
        await service.stop()

    async def cleanup(app: web.Application) -> None:
        # Replicas keep running: a restarted controller re-adopts them.
        await service.stop()
        if GATEWAY in app:
            await app[GATEWAY].stop()
        if api.RECONCILER in app:
            reconciler = app[api.RECONCILER]
            await reconciler.stop()
            if reconciler.port_gateway is not None:
                await reconciler.port_gateway.stop()
        for platform in platforms.values():
            await platform.close()
        store.close()

    async def gateway_handler(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].handle(request)

    app.router.add_route("*", "/fn/{name}", gateway_handler)
    app.router.add_route("*", "/fn/{name}/{tail:.*}", gateway_handler)
    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app


def _mount_runs(app: web.Application, settings: Settings) -> None:
    """/api/runs and /api/artifacts from tickrun.functions.runs, on the controller's DB URL (its
    tables are its own; they sit beside the controller's in the same database)."""
    try:
        from tickrun.functions.runs.api import add_routes
        from tickrun.functions.runs.db import SqlRunDB
    except ImportError:  # tracking not installed: the controller still deploys and serves
        return
    db = SqlRunDB(settings.database_url)
    add_routes(app, db)

    async def close_runs(app: web.Application) -> None:
        db.close()

    app.on_cleanup.append(close_runs)


def _mount_hub(app: web.Application) -> None:
    """/api/hub: the bundled hub catalogue, so this controller is also a remote hub."""
    try:
        from tickrun.hub.api import add_routes
    except ImportError:
        return
    add_routes(app)
