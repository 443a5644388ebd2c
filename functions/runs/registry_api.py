"""The model registry's REST API, mounted with the runs API (``api.add_routes``).

==============================================================  ===============================
``GET    /api/models?limit=``                                   registered models
``POST   /api/models``                                          register a version (201)
``GET    /api/models/{name}``                                   one registered model
``GET    /api/model-versions?name=&tag=k=v&run_uid=&limit=``    versions, newest first
``GET    /api/models/{name}/versions/{version}``                a number, ``latest`` or an alias
``DELETE /api/models/{name}/versions/{version}?force=1``        409 while aliased, unless force
``PUT    /api/models/{name}/aliases/{alias}``                   ``{"version": N}``: set or move
``DELETE /api/models/{name}/aliases/{alias}``                   remove the alias
==============================================================  ===============================

Errors as the runs API's: ``{"error", "detail"}`` with 400 (bad name, alias, version or body),
404 (unknown model, version or alias), 409 (deleting an aliased version). Authentication is the
mounting app's middleware. The lineage of a new version is read from this server's run DB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..errors import BadRequestError, TickrunError
from ..queryparams import int_param
from .db.base import RunDB
from .db.registry_base import ModelRegistry
from .registry_records import AliasRequest, RegisterRequest

REGISTRY_KEY: web.AppKey[ModelRegistry] = web.AppKey("tickrun_model_registry", ModelRegistry)
# Called with the model's name after a write that can move what an alias names (the mounting
# app, e.g. the controller's model bindings, listens without this package importing it).
Listener = Callable[[str], None]
LISTENERS: web.AppKey[list[Listener]] = web.AppKey("tickrun_model_registry_listeners", list)
MAX_LIMIT = 10000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(fn: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except TickrunError as exc:
            return web.json_response(exc.to_dict(), status=exc.status)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()[:20]
            ]
            err = BadRequestError("invalid model registry request", detail=fields)
            return web.json_response(err.to_dict(), status=err.status)

    return wrapped


def _reg(request: web.Request) -> ModelRegistry:
    return request.app[REGISTRY_KEY]


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)  # SQLAlchemy blocks: off the loop


def on_change(app: web.Application, listener: Listener) -> None:
    """Call ``listener(name)`` after every registry write through this API that may move an
    alias or ``latest`` (set, delete, a version registered or deleted)."""
    app[LISTENERS].append(listener)


def _changed(request: web.Request, name: str) -> None:
    for listener in request.app.get(LISTENERS, ()):
        listener(name)


def _limit(request: web.Request, default: int) -> int:
    value = int_param(request.query, "limit", default, lo=1)
    return min(value if value is not None else default, MAX_LIMIT)


def _version(text: str) -> int:
    value = int_param({"version": text}, "version", lo=1, hi=2**31 - 1)
    if value is None:
        raise BadRequestError("a model version is an integer ≥ 1")
    return value


@_guard
async def list_models(request: web.Request) -> web.StreamResponse:
    models = await _call(_reg(request).list_models, _limit(request, 1000))
    return web.json_response({"models": [m.model_dump(mode="json") for m in models]})


@_guard
async def register(request: web.Request) -> web.StreamResponse:
    body = RegisterRequest.model_validate_json(await request.read())
    mv = await _call(_reg(request).register, body)
    _changed(request, mv.name)  # aliases set with it; models:/name/latest moved
    return web.json_response({"version": mv.model_dump(mode="json")}, status=201)


@_guard
async def get_model(request: web.Request) -> web.StreamResponse:
    model = await _call(_reg(request).get_model, request.match_info["name"])
    return web.json_response({"model": model.model_dump(mode="json")})


@_guard
async def list_versions(request: web.Request) -> web.StreamResponse:
    q = request.query
    tags: dict[str, str] = {}
    for item in q.getall("tag", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadRequestError(f"tag filter {item[:80]!r}: expected tag=KEY=VALUE")
        tags[key] = value
    versions = await _call(
        _reg(request).list_versions,
        q.get("name") or None,
        tags=tags or None,
        run_uid=q.get("run_uid") or None,
        limit=_limit(request, 1000),
    )
    return web.json_response({"versions": [v.model_dump(mode="json") for v in versions]})


@_guard
async def get_version(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    mv = await _call(_reg(request).get_version, m["name"], m["version"])
    return web.json_response({"version": mv.model_dump(mode="json")})


@_guard
async def delete_version(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    version = _version(m["version"])
    force = request.query.get("force") in ("1", "true")
    await _call(_reg(request).delete_version, m["name"], version, force=force)
    _changed(request, m["name"])
    return web.json_response({"deleted": {"name": m["name"], "version": version}})


@_guard
async def set_alias(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    body = AliasRequest.model_validate_json(await request.read())
    mv = await _call(_reg(request).set_alias, m["name"], m["alias"], body.version)
    _changed(request, m["name"])
    return web.json_response({"version": mv.model_dump(mode="json")})


@_guard
async def delete_alias(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    await _call(_reg(request).delete_alias, m["name"], m["alias"])
    _changed(request, m["name"])
    return web.json_response({"deleted": {"name": m["name"], "alias": m["alias"]}})


def add_routes(app: web.Application, db: RunDB) -> None:
    app[REGISTRY_KEY] = db.registry()
    app[LISTENERS] = []
    r = app.router
    r.add_get("/api/models", list_models)
    r.add_post("/api/models", register)
    r.add_get("/api/model-versions", list_versions)
    r.add_get("/api/models/{name}", get_model)
    r.add_get("/api/models/{name}/versions/{version}", get_version)
    r.add_delete("/api/models/{name}/versions/{version}", delete_version)
    r.add_put("/api/models/{name}/aliases/{alias}", set_alias)
    r.add_delete("/api/models/{name}/aliases/{alias}", delete_alias)


def openapi_paths(op: Any, json_body: Any) -> dict[str, Any]:
    """The OpenAPI description of these routes (``op``/``json_body`` are the controller's
    openapi.py helpers)."""

    def path(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    def query(name: str, text: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": text,
            "schema": schema or {"type": "string"},
        }

    version_obj = {
        "type": "object",
        "description": "a model version: name, version, model_uri (store://), description, "
        "tags, aliases, framework, sha256, metrics, lineage",
    }
    one = json_body({"type": "object", "properties": {"version": version_obj}}, "the version")
    many = json_body(
        {"type": "object", "properties": {"versions": {"type": "array", "items": version_obj}}},
        "versions, newest first",
    )
    model = {"type": "object", "description": "name, latest_version, versions, aliases"}
    deleted = json_body({"type": "object"}, "deleted")
    limit = query("limit", "at most this many", {"type": "integer", "minimum": 1})
    name, alias, version = path("name"), path("alias"), path("version")
    return {
        "/api/models": {
            "get": op(
                "registered models, most recently updated first",
                json_body(
                    {"type": "object", "properties": {"models": {"type": "array", "items": model}}},
                    "models",
                ),
                400,
                params=[limit],
            ),
            "post": op(
                "register a logged model (store:// or models:/ URI) as the next version of a "
                "name; lineage is read from the run that logged it",
                one,
                400,
                404,
                body=RegisterRequest.model_json_schema(),
                ok_code="201",
            ),
        },
        "/api/model-versions": {
            "get": op(
                "search versions by model name, tags (tag=KEY=VALUE, repeatable) and run",
                many,
                400,
                404,
                params=[
                    query("name", "one model's versions"),
                    query("tag", "KEY=VALUE; every tag given must match"),
                    query("run_uid", "versions logged by this run"),
                    limit,
                ],
            )
        },
        "/api/models/{name}": {
            "get": op(
                "a registered model",
                json_body({"type": "object", "properties": {"model": model}}, "the model"),
                400,
                404,
                params=[name],
            )
        },
        "/api/models/{name}/versions/{version}": {
            "get": op(
                "a version by number, 'latest' or alias",
                one,
                400,
                404,
                params=[name, version],
            ),
            "delete": op(
                "delete a version; 409 while an alias points at it, unless force=1 (the "
                "aliases go with it)",
                deleted,
                400,
                404,
                409,
                params=[name, version, query("force", "1: delete its aliases too")],
            ),
        },
        "/api/models/{name}/aliases/{alias}": {
            "put": op(
                "point the alias at a version (created, or moved atomically)",
                one,
                400,
                404,
                params=[name, alias],
                body=AliasRequest.model_json_schema(),
            ),
            "delete": op("remove the alias", deleted, 400, 404, params=[name, alias]),
        },
    }
