"""The server side of the runs REST API, for the controller to mount: ``add_routes(app, db)``.

=========================================  ====================================================
``GET  /api/runs?project=&state=&name=``   newest runs (iteration 0; ``iterations=1`` for all)
``GET  /api/runs/{uid}[?iteration=N]``     one run; iteration 0 also lists its iterations
``POST /api/runs``                         a batch ``{"runs": [...], "artifacts": [...]}``
``POST /api/runs/_stale``                  mark runs whose process died as aborted
``GET  /api/artifacts?project=&uid=&…``    artifact records
``GET  /api/artifacts/{project}/{uid}/{iteration}/{key}``  one artifact record
=========================================  ====================================================

Authentication is the controller's middleware; these handlers only validate and store. The DB
calls are blocking (SQLAlchemy), so they run in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..errors import BadRequestError, BodyTooLargeError, TickrunError
from .db.base import RunDB
from .model import RunBatch

logger = logging.getLogger(__name__)

DB_KEY: web.AppKey[RunDB] = web.AppKey("tickrun_runs_db", RunDB)
MAX_BATCH_BYTES = 32 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(exc: TickrunError) -> web.Response:
    return web.json_response(exc.to_dict(), status=exc.status)


def _guard(fn: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except TickrunError as exc:
            return _json_error(exc)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()[:20]
            ]
            return _json_error(BadRequestError("invalid run batch", detail=fields))

    return wrapped


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequestError(f"query parameter {name} must be an integer") from None


def _db(request: web.Request) -> RunDB:
    return request.app[DB_KEY]


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


@_guard
async def list_runs(request: web.Request) -> web.StreamResponse:
    q = request.query
    runs = await _call(
        _db(request).list_runs,
        q.get("project") or None,
        uid=q.get("uid") or None,
        state=q.get("state") or None,
        name=q.get("name") or None,
        iterations=q.get("iterations") in ("1", "true"),
        limit=min(_int(request, "limit", 100) or 100, 10000),
    )
    return web.json_response({"runs": [r.model_dump(mode="json") for r in runs]})


@_guard
async def get_run(request: web.Request) -> web.StreamResponse:
    uid = request.match_info["uid"]
    iteration = _int(request, "iteration", 0) or 0
    db = _db(request)
    run = await _call(db.get_run, uid, iteration)
    out: dict[str, Any] = {"run": run.model_dump(mode="json")}
    if iteration == 0:
        its = await _call(db.list_runs, None, uid=uid, limit=10000)
        out["iterations"] = [r.model_dump(mode="json") for r in its if r.iteration > 0]
    return web.json_response(out)


@_guard
async def post_runs(request: web.Request) -> web.StreamResponse:
    # Read the stream ourselves: the app's client_max_size (1 MiB by default) is the
    # controller's choice, and a batch of artifact previews can be larger.
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > MAX_BATCH_BYTES:
            raise BodyTooLargeError(f"run batch over {MAX_BATCH_BYTES} bytes")
    raw = bytes(buf)
    batch = RunBatch.model_validate_json(raw)
    await _call(_db(request).apply, batch)
    return web.json_response({"runs": len(batch.runs), "artifacts": len(batch.artifacts)})


@_guard
async def mark_stale(request: web.Request) -> web.StreamResponse:
    marked = await _call(_db(request).mark_stale)
    return web.json_response({"runs": [r.model_dump(mode="json") for r in marked]})


@_guard
async def list_artifacts(request: web.Request) -> web.StreamResponse:
    q = request.query
    arts = await _call(
        _db(request).list_artifacts,
        q.get("project") or None,
        uid=q.get("uid") or None,
        iteration=_int(request, "iteration"),
        key=q.get("key") or None,
        kind=q.get("kind") or None,
        limit=min(_int(request, "limit", 1000) or 1000, 10000),
    )
    return web.json_response({"artifacts": [a.model_dump(mode="json") for a in arts]})


@_guard
async def get_artifact(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    try:
        iteration = int(m["iteration"])
    except ValueError:
        raise BadRequestError("iteration must be an integer") from None
    rec = await _call(_db(request).get_artifact, m["project"], m["uid"], iteration, m["key"])
    return web.json_response({"artifact": rec.model_dump(mode="json")})


def add_routes(app: web.Application, db: RunDB) -> None:
    """Mount ``/api/runs`` and ``/api/artifacts`` on ``app``, backed by ``db``."""
    app[DB_KEY] = db
    r = app.router
    r.add_get("/api/runs", list_runs)
    r.add_post("/api/runs", post_runs)
    r.add_post("/api/runs/_stale", mark_stale)
    r.add_get("/api/runs/{uid}", get_run)
    r.add_get("/api/artifacts", list_artifacts)
    r.add_get("/api/artifacts/{project}/{uid}/{iteration}/{key}", get_artifact)
