"""The controller's aiohttp application: middlewares (errors → JSON, bearer auth), the REST API,
the gateway, and the start/stop order of the components behind them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from tickrun import __version__
from tickrun.functions.errors import BadRequestError, TickrunError
from tickrun.functions.httpserver import request_id_of
from tickrun.functions.httpserver_guard import ConnectionGuard
from tickrun.functions.requestid import REQUEST_ID_HEADER

from . import api, secrets_api
from .auth import (
    LIMITER,
    TooManyAttemptsError,
    WrongTokenLimiter,
    authorization,
    check_bearer_limited,
    load_or_create_token,
    too_many_response,
)
from .bindings import ModelBindings
from .builder import Builder
from .builder.engine import Engine
from .builder.registry import RegistryConfig
from .edge import make_guard
from .gateway import Gateway
from .haproxy import trust as haproxy_trust
from .openapi import OPENAPI_PATH, document
from .platforms.base import ClusterPlatform, Platform
from .platforms.container import ContainerPlatform
from .platforms.process import ProcessPlatform
from .portgateway import PortGateway
from .reconciler import Reconciler
from .schedules.api import mount as mount_schedules
from .schedules.launcher import ProcessLauncher
from .schedules.scheduler import Scheduler
from .schedules.store import ScheduleStore
from .service import FunctionService, make_private_dirs
from .settings import Settings
from .store import Store
from .ui import functions_api as ui_functions_api
from .ui import routes as ui

if TYPE_CHECKING:
    from tickrun.functions.runs.db.base import RunDB

logger = logging.getLogger(__name__)

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
GUARD: web.AppKey[ConnectionGuard] = web.AppKey("guard", ConnectionGuard)
OPEN_PATHS = {"/healthz", OPENAPI_PATH}
# The hub catalogue is read-only and public (remote hub clients send no token).
OPEN_PREFIXES = ("/api/hub",)
MAX_REQUEST_BYTES = 96 * 1024 * 1024
MAX_LOGGED_PATH = 200  # a deploy carries the code archive (64 MiB max) in base64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(request: web.Request, body: dict[str, object], status: int, **kw: Any) -> web.Response:
    return web.json_response({**body, "request_id": request_id_of(request)}, status=status, **kw)


def _where(request: web.Request) -> dict[str, str]:
    # A path can be as long as the request line allows: a log line stays short.
    return {"path": request.path[:MAX_LOGGED_PATH], "method": request.method[:32]}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TickrunError as exc:
        return _error(request, exc.to_dict(), exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(
            request,
            {"error": exc.reason, "detail": exc.text or exc.reason},
            exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except (RequestPayloadError, HttpProcessingError) as exc:
        # A broken body (chunked garbage, a short Content-Length): the client's fault. The
        # exception's text quotes the raw bytes, so only its kind is logged and answered.
        logger.warning(
            "malformed request body",
            extra={**_where(request), "reason": type(exc).__name__},
        )
        err = BadRequestError(f"malformed request body ({type(exc).__name__})")
        return _error(request, err.to_dict(), err.status)
    except ConnectionResetError:
        # The client went away mid-request (a truncated body): nobody is left to answer.
        logger.info("client closed the connection mid-request", extra=_where(request))
        return _error(request, {"error": "ClientGone", "detail": "connection lost"}, 400)
    except Exception:
        logger.exception("request failed", extra=_where(request))
        return _error(
            request,
            {"error": "InternalError", "detail": "internal error; see the controller log"},
            500,
        )


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # Exactly one: whatever a replica answered through /fn/ is replaced by the id it was sent.
    response.headers[REQUEST_ID_HEADER] = request_id_of(request)


def auth_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or ui.is_open(path)
        if not open_path and not (settings.public_gateway and path.startswith("/fn/")):
            header = authorization(request.headers)
            # The web UI's session cookie stands in for the token (writes need its CSRF
            # header); a request that sends a token is judged by the token alone.
            if header is not None or not ui.cookie_auth(request):
                try:  # wrong tokens are limited per client address (auth.py)
                    check_bearer_limited(request, header, request.app[TOKEN])
                except TooManyAttemptsError as exc:
                    return too_many_response(request, exc)
        return await handler(request)

    return middleware


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def version(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    service = request.app[api.SERVICE]
    return web.json_response(
        {
            "version": __version__,
            "platforms": sorted(service.offered()),
            "default_platform": settings.default_platform,
            "isolation": {n: p.isolation() for n, p in service.platforms.items()}
            | {n: c.isolation() for n, c in service.clusters.items()},
        }
    )


def _platforms(settings: Settings, builder: Builder) -> dict[str, Platform]:
    """The replica platforms that are available and not turned off (TICKRUN_PLATFORMS)."""
    platforms: dict[str, Platform] = {}
    if settings.offers("process"):
        platforms["process"] = ProcessPlatform(settings=settings)
    engine_name = settings.engine() if settings.offers("container") else None
    if engine_name is not None and engine_name != "buildah":
        platforms["container"] = ContainerPlatform(Engine(engine_name))
    return platforms


def _clusters(settings: Settings) -> dict[str, ClusterPlatform]:
    """The kubernetes platform, when a kubeconfig is set or the controller runs in a pod."""
    if not settings.kubernetes or not settings.offers("kubernetes"):
        return {}
    # The client library is large: imported only when the platform is offered.
    from .platforms.kubernetes.platform import KubernetesPlatform

    return {
        "kubernetes": KubernetesPlatform(
            settings.k8s_namespace,
            settings.kubeconfig,
            autoscaler=settings.k8s_autoscaler,
            registry=RegistryConfig.from_settings(settings),
        )
    }


def create_app(settings: Settings) -> web.Application:
    """Wire the components (no I/O here; it all happens in the startup hook)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(settings)], client_max_size=MAX_REQUEST_BYTES
    )
    store = Store(settings.database_url)
    builder = Builder(settings)
    platforms = _platforms(settings, builder)
    clusters = _clusters(settings)
    service = FunctionService(settings, store, builder, platforms, clusters)
    guard = make_guard(settings)
    app[SETTINGS] = settings
    app[LIMITER] = WrongTokenLimiter()  # shared by the bearer check and the UI's login
    app[GUARD] = guard
    haproxy_trust.install(app, settings)  # HAProxy in front: the client address it saw
    app[api.STORE] = store
    app[api.SERVICE] = service
    app[api.STOPPING] = asyncio.Event()
    app.router.add_get("/healthz", healthz)
    app.router.add_get(OPENAPI_PATH, openapi)
    app.router.add_get("/api/version", version)
    api.add_routes(app)
    secrets_api.add_routes(app)
    bindings = ModelBindings(settings.state_dir / "models", store, None)
    bindings.db = _mount_runs(app, settings, bindings.nudge)
    service.bindings = bindings
    _mount_hub(app)
    ui.mount(
        app,
        ui.UiConfig(
            "controller",
            token_of=lambda a: a[TOKEN],
            revocations_of=lambda a: a[api.STORE],  # logouts hold on every controller replica
        ),
    )
    ui_functions_api.add_routes(app)  # metrics, Kafka lag per partition, log follow
    if bindings.db is not None:  # artifact previews for the UI, beside /api/artifacts
        from .ui.extra_api import add_artifact_routes

        add_artifact_routes(app)

    async def startup(app: web.Application) -> None:
        t0 = time.monotonic()
        app[TOKEN] = load_or_create_token(settings)
        make_private_dirs(settings)
        store.open()
        controller_id = store.controller_id()
        offered = service.offered()
        for fn in store.list_functions():
            if fn.platform not in offered:
                # Its replicas (if any still run) are neither watched nor stopped from here on.
                logger.warning(
                    "a function's platform is not offered: redeploy it to one that is",
                    extra={"function": fn.name, "platform": fn.platform, "offered": offered},
                )
        for platform in platforms.values():
            platform.controller_id = controller_id  # type: ignore[attr-defined]
            platform.isolation()  # probed now: replicas without a sandbox are reported at start
        reconciler = Reconciler(settings, store, service, platforms, controller_id)
        # The reconciler publishes ready replicas into its table; both gateways route by it.
        gateway = Gateway(reconciler.endpoints, store, max_connections=guard.limit)
        if settings.function_ports:
            reconciler.port_gateway = PortGateway(
                reconciler.endpoints, settings.host, public=settings.public_gateway, guard=guard
            )
        app[api.RECONCILER] = reconciler
        service.on_change = reconciler.wake
        service.on_delete = reconciler.forget
        app[GATEWAY] = gateway
        await reconciler.start()
        # models:/ bindings: a moved alias gives the function a new revision (rolled over).
        bindings.lock, bindings.on_change = service.lock, reconciler.wake
        await bindings.start()
        reconciler.lag.start()
        await gateway.start()
        # After adoption: the replicas of a half-deleted function are known, so they stop.
        await service.finish_deletes()
        await service.resume_builds()
        logger.info(
            "controller started",
            extra={
                "state_dir": str(settings.state_dir),
                "platforms": service.offered(),
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
        await bindings.stop()
        await service.stop()
        if GATEWAY in app:
            await app[GATEWAY].stop()
        if api.RECONCILER in app:
            reconciler = app[api.RECONCILER]
            await reconciler.stop()
            await asyncio.to_thread(reconciler.lag.stop)
            if reconciler.port_gateway is not None:
                await reconciler.port_gateway.stop()
        for platform in platforms.values():
            await platform.close()
        for cluster in clusters.values():
            await cluster.close()
        store.close()
        guard.close()

    async def gateway_handler(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].handle(request)

    app.router.add_route("*", "/fn/{name}", gateway_handler)
    app.router.add_route("*", "/fn/{name}/{tail:.*}", gateway_handler)
    app.on_response_prepare.append(_stamp_request_id)
    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    # Scheduled jobs: started after the store opened, drained on shutdown before it closes.
    launcher = ProcessLauncher(settings.database_url, settings.state_dir / "schedule-logs")
    mount_schedules(app, Scheduler(ScheduleStore(store), launcher))
    return app


def _mount_runs(
    app: web.Application, settings: Settings, on_registry_change: Callable[[str], None]
) -> RunDB | None:
    """/api/runs and /api/artifacts from tickrun.functions.runs, on the controller's DB URL (its
    tables are its own; they sit beside the controller's in the same database). The run DB, for
    the model bindings (None without tracking)."""
    try:
        from tickrun.functions.runs.api import add_routes
        from tickrun.functions.runs.db import SqlRunDB
        from tickrun.functions.runs.registry_api import on_change
    except ImportError:  # tracking not installed: the controller still deploys and serves
        return None
    db = SqlRunDB(settings.database_url)
    add_routes(app, db)
    on_change(app, on_registry_change)  # an alias moved: re-check the model bindings now

    async def close_runs(app: web.Application) -> None:
        db.close()

    app.on_cleanup.append(close_runs)
    return db


def _mount_hub(app: web.Application) -> None:
    """/api/hub: the bundled hub catalogue, so this controller is also a remote hub."""
    try:
        from tickrun.hub.api import add_routes
    except ImportError:
        return
    add_routes(app)
