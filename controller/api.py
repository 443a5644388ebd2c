"""REST routes under ``/api``: functions, builds, events, logs, export."""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from tickrun.functions import jsonbody
from tickrun.functions.errors import BadRequestError, NotFoundError, SpecError
from tickrun.functions.processor.exitcodes import ExitCode, ExitStatus
from tickrun.functions.queryparams import int_param
from tickrun.functions.spec import parse_spec
from tickrun.functions.spec.loader import format_validation_error

from .reconciler import Reconciler
from .scaling import scale_function
from .service import FunctionService, desired_replicas, replica_ref
from .store import BuildRow, FunctionRow, ReplicaRow, Store

STORE: web.AppKey[Store] = web.AppKey("store", Store)
SERVICE: web.AppKey[FunctionService] = web.AppKey("service", FunctionService)
RECONCILER: web.AppKey[Reconciler] = web.AppKey("reconciler", Reconciler)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
_M = TypeVar("_M", bound=BaseModel)


class DeployRequest(BaseModel):
    """Create or update a function. Without ``code`` the stored code is kept (spec update)."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="the function.yaml document (Nuclio format)")
    code: str | None = Field(default=None, description="base64 of a tar.gz of the code folder")
    platform: Literal["process", "container", "kubernetes"] | None = None


class ScaleRequest(BaseModel):
    """A fixed count (``replicas``; 0 stops the function) or autoscaled bounds
    (``minReplicas`` and ``maxReplicas``). The spec's own validation checks the values."""

    model_config = ConfigDict(extra="forbid")

    replicas: StrictInt | None = Field(default=None, ge=0)
    min_replicas: StrictInt | None = Field(default=None, alias="minReplicas", ge=0)
    max_replicas: StrictInt | None = Field(default=None, alias="maxReplicas", ge=0)

    @model_validator(mode="after")
    def _one_form(self) -> ScaleRequest:
        bounds = (self.min_replicas, self.max_replicas)
        if self.replicas is not None:
            if bounds != (None, None):
                raise ValueError("send either replicas or minReplicas and maxReplicas, not both")
        elif None in bounds:
            raise ValueError("send replicas, or both minReplicas and maxReplicas")
        return self


def _iso(ts: float | None) -> float | None:
    return round(ts, 3) if ts is not None else None


def exit_json(r: ReplicaRow, status: ExitStatus | None) -> dict[str, Any] | None:
    """Why a replica last stopped: its exit code by name, and the processor's own reason
    when it gave one (see ``functions/processor/exitcodes.py``)."""
    if r.exit_code is None and status is None:
        return None
    out: dict[str, Any] = {"code": r.exit_code, "name": ExitCode.describe(r.exit_code)}
    if status is not None:
        out |= {"reason": status.reason.value, "detail": status.detail}
    return out


def replica_json(
    r: ReplicaRow, status: ExitStatus | None = None, not_ready: str | None = None
) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.state,
        "port": r.port,
        "pid": r.pid,
        "container": r.container,
        "revision": r.revision,
        "restarts": r.restarts,
        "exit_code": r.exit_code,
        "exit": exit_json(r, status),
        "not_ready": not_ready if r.state == "starting" else None,
        "started_at": _iso(r.started_at),
        "ready_at": _iso(r.ready_at),
    }


def build_json(b: BuildRow) -> dict[str, Any]:
    return {
        "id": b.id,
        "function": b.function,
        "version": b.version,
        "platform": b.platform,
        "state": b.state,
        "cached": b.cached,
        "content_hash": b.content_hash,
        "message": b.message,
        "started_at": _iso(b.started_at),
        "finished_at": _iso(b.finished_at),
        "duration_s": round(b.finished_at - b.started_at, 3) if b.finished_at else None,
    }


def function_json(
    store: Store, f: FunctionRow, reconciler: Reconciler | None = None
) -> dict[str, Any]:
    spec = f.spec
    desired = reconciler.desired(f) if reconciler is not None else desired_replicas(spec)
    replicas = store.list_replicas(f.name)
    lo, hi = spec.spec.replica_bounds()
    builds = store.list_builds(f.name, limit=1)
    port_gateway = reconciler.port_gateway if reconciler is not None else None
    exits = reconciler.exits if reconciler is not None else {}
    unready = reconciler.unready if reconciler is not None else {}
    return {
        "name": f.name,
        "platform": f.platform,
        "version": f.version,
        "state": f.state,
        "message": f.message,
        "url": f"/fn/{f.name}/",
        "port": f.gateway_port,
        # Where the function port listens (loopback unless the controller's address is public
        # and the gateway needs no token; see portgateway.py).
        "port_host": port_gateway.host if port_gateway is not None and f.gateway_port else None,
        "image": f.image,
        "revision": f.revision,
        "code_hash": f.code_hash,
        "replicas": {
            "desired": desired,
            "min": lo,
            "max": hi,
            "ready": sum(1 for r in replicas if r.state == "ready"),
            "items": [replica_json(r, exits.get(r.id), unready.get(r.id)) for r in replicas],
        },
        # Why the count is what it is (in-flight, Kafka lag, idle, a cron wake) and the lag.
        "scale": reconciler.autoscaler.explain(f.name) if reconciler is not None else None,
        "last_build": build_json(builds[0]) if builds else None,
        "spec": spec.to_yaml_dict(),
        "created_at": _iso(f.created_at),
        "updated_at": _iso(f.updated_at),
    }


async def _body(request: web.Request, model: type[_M], what: str) -> _M:
    """The request's JSON body as ``model``; invalid: a 400 naming ``what`` and the fields."""
    raw = await read_json(request)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, fields = format_validation_error(exc)
        raise SpecError(
            message.replace("invalid function spec", f"invalid {what}"), detail=fields
        ) from exc


async def _deploy_body(request: web.Request) -> DeployRequest:
    return await _body(request, DeployRequest, "deploy request")


def _code(body: DeployRequest) -> bytes | None:
    if body.code is None:
        return None
    try:
        return base64.b64decode(body.code, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError("code is not valid base64") from exc


async def create_function(request: web.Request) -> web.Response:
    body = await _deploy_body(request)
    service = request.app[SERVICE]
    row, build, warnings = await service.deploy(parse_spec(body.spec), _code(body), body.platform)
    request.app[RECONCILER].wake()
    fn = function_json(request.app[STORE], row, request.app[RECONCILER])
    return web.json_response(
        {"function": fn, "build": build_json(build), "warnings": warnings}, status=202
    )


async def update_function(request: web.Request) -> web.Response:
    body = await _deploy_body(request)
    service = request.app[SERVICE]
    row, build, warnings = await service.deploy(
        parse_spec(body.spec), _code(body), body.platform, name=request.match_info["name"]
    )
    request.app[RECONCILER].wake()
    fn = function_json(request.app[STORE], row, request.app[RECONCILER])
    return web.json_response(
        {"function": fn, "build": build_json(build), "warnings": warnings}, status=202
    )


async def scale(request: web.Request) -> web.Response:
    """Change only the replica counts: no new version and no build (see scaling.py)."""
    body = await _body(request, ScaleRequest, "scale request")
    row, change = await scale_function(
        request.app[SERVICE],
        request.match_info["name"],
        replicas=body.replicas,
        min_replicas=body.min_replicas,
        max_replicas=body.max_replicas,
    )
    fn = function_json(request.app[STORE], row, request.app[RECONCILER])
    return web.json_response({"function": fn, "scale": change})


async def list_functions(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response(
        {
            "functions": [
                function_json(store, f, request.app[RECONCILER]) for f in store.list_functions()
            ]
        }
    )


async def get_function(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response(
        function_json(
            store, store.get_function(request.match_info["name"]), request.app[RECONCILER]
        )
    )


async def delete_function(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[SERVICE].delete(name)
    return web.json_response({"deleted": name})


async def export_function(request: web.Request) -> web.Response:
    row = request.app[STORE].get_function(request.match_info["name"])
    return web.json_response(row.spec.to_yaml_dict())


async def function_events(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["name"]
    after = _int_query(request, "after", 0)
    events = store.list_events(name, after_id=after, limit=_int_query(request, "limit", 500))
    if not events and after == 0 and store.find_function(name) is None:
        raise NotFoundError(f"function {name!r} not found")
    return web.json_response(
        {
            "events": [
                {
                    "id": e.id,
                    "time": _iso(e.time),
                    "kind": e.kind,
                    "message": e.message,
                    "replica": e.replica,
                    "data": e.data,
                }
                for e in events
            ]
        }
    )


async def function_logs(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["name"]
    tail = max(1, min(_int_query(request, "tail", 200), 10000))
    fn = store.get_function(name)
    only = request.query.get("replica")
    platforms = request.app[SERVICE].platforms
    out: list[dict[str, Any]] = []
    cluster = request.app[SERVICE].clusters.get(fn.platform)
    if cluster is not None:
        # The cluster's pods/log, per pod (the pods are the function's replicas).
        states = {r.id: r.state for r in store.list_replicas(name)}
        for logs in await cluster.logs(name, tail):
            if not only or logs.pod == only:
                entry = {"replica": logs.pod, "state": states.get(logs.pod), "lines": logs.lines}
                out.append(entry | ({"error": logs.error} if logs.error else {}))
        if only and not out:
            raise NotFoundError(f"replica {only!r} of function {name!r} not found")
        return web.json_response({"replicas": out})
    for rep in store.list_replicas(name):
        if only and rep.id != only:
            continue
        platform = platforms.get(rep.platform)
        lines = await platform.logs(replica_ref(rep), tail) if platform else []
        out.append({"replica": rep.id, "state": rep.state, "lines": lines})
    if only and not out:
        raise NotFoundError(f"replica {only!r} of function {name!r} not found")
    return web.json_response({"replicas": out})


async def function_builds(request: web.Request) -> web.Response:
    store = request.app[STORE]
    name = request.match_info["name"]
    store.get_function(name)
    return web.json_response({"builds": [build_json(b) for b in store.list_builds(name)]})


async def get_build(request: web.Request) -> web.Response:
    return web.json_response(build_json(request.app[STORE].get_build(request.match_info["id"])))


async def build_log(request: web.Request) -> web.StreamResponse:
    """The build log; ``?follow=1`` streams it until the build ends (the CLI's progress)."""
    store = request.app[STORE]
    build = store.get_build(request.match_info["id"])
    follow = request.query.get("follow") in ("1", "true")
    path = Path(build.log_path)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    # Kept open: a delete removes the log, and the lines written up to then (the "aborted"
    # one included) are still read through this handle.
    log: BinaryIO | None = None
    try:
        while True:
            try:
                running = store.get_build(build.id).state == "running"
            except NotFoundError:
                running = None  # its function was deleted, and its builds with it
            # Read after checking the state, so the lines written before the build ended go out.
            if log is None:
                log = await asyncio.to_thread(_open_or_none, path)
            chunk = await asyncio.to_thread(log.read) if log is not None else b""
            if chunk:
                await response.write(chunk)
            if running is None:
                await response.write(b"build ended: its function was deleted\n")
                break
            if not follow or not running or request.app[STOPPING].is_set():
                break
            await asyncio.sleep(0.1)
    finally:
        if log is not None:
            log.close()
    await response.write_eof()
    return response


def _open_or_none(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; anything else (nesting past the parser's depth, integers past
    Python's digit limit, invalid UTF-8) is a 400."""
    body = await request.read()
    try:
        return jsonbody.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise BadRequestError("request body is not valid JSON") from exc


def _int_query(request: web.Request, key: str, default: int, *, lo: int = 0) -> int:
    value = int_param(request.query, key, default, lo=lo)
    return default if value is None else value


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/functions", list_functions)
    r.add_post("/api/functions", create_function)
    r.add_get("/api/functions/{name}", get_function)
    r.add_put("/api/functions/{name}", update_function)
    r.add_delete("/api/functions/{name}", delete_function)
    r.add_put("/api/functions/{name}/scale", scale)
    r.add_get("/api/functions/{name}/events", function_events)
    r.add_get("/api/functions/{name}/logs", function_logs)
    r.add_get("/api/functions/{name}/builds", function_builds)
    r.add_get("/api/functions/{name}/export", export_function)
    r.add_get("/api/builds/{id}", get_build)
    r.add_get("/api/builds/{id}/log", build_log)
