"""The server side of the runs REST API, for the controller to mount: ``add_routes(app, db)``.

=========================================  ====================================================
``GET  /api/runs?project=&state=&label=…``  the runs table: filters, sort, pages, total (below)
``GET  /api/runs?uid=|name=|iterations=1``  the old listing: newest runs (``iterations=1``: all)
``GET  /api/runs/{uid}[?iteration=N]``     one run; iteration 0 also lists its iterations
``GET  /api/runs/{uid}/log[?iteration=N]`` the run's log, text/plain; ``X-Tickrun-Log: live|final``
``POST /api/runs``                         a batch ``{"runs": [...], "artifacts": [...]}``
``POST /api/runs/_stale``                  mark runs whose process died as aborted
``GET  /api/artifacts?project=&uid=&…``    artifact records
``GET  /api/artifacts/{project}/{uid}/{iteration}/{key}``  one artifact record
=========================================  ====================================================

The runs table's query (``label`` repeatable, ``q``, ``param.<k>=[op:]v``, ``result.<k>=…``,
``since``/``until``, ``sort=start|name|state|params.<k>|results.<k>``, ``order``, ``limit``,
``offset``, ``columns``) is documented in controller/ui/API.md; db/search.py runs it.

The model registry's routes (``/api/models``…) are mounted with these: registry_api.py.

Authentication is the controller's middleware; these handlers only validate and store. The DB
calls are blocking (SQLAlchemy), so they run in a thread, off the event loop. An artifact record
whose ``target`` lies outside the configured artifact stores (:class:`ArtifactRoots`) is refused
with a 400: a record is where readers go to fetch bytes, so it must not name any other file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..artifacts import S3Settings, split_url
from ..artifacts.targets import ArtifactRoots, ArtifactTargetError
from ..errors import BadRequestError, BodyTooLargeError, NotFoundError, TickrunError
from ..queryparams import int_param
from . import registry_api
from .db.base import RunDB
from .db.search import RunSearch
from .db.search_query import LEGACY_PARAMS, parse_query
from .db.sql import SqlRunDB
from .records import RunBatch
from .settings import TrackingSettings

logger = logging.getLogger(__name__)

DB_KEY: web.AppKey[RunDB] = web.AppKey("tickrun_runs_db", RunDB)
ROOTS_KEY: web.AppKey[ArtifactRoots] = web.AppKey("tickrun_artifact_roots", ArtifactRoots)
SEARCH_KEY: web.AppKey[RunSearch] = web.AppKey("tickrun_runs_search", RunSearch)
S3_KEY: web.AppKey[S3Settings] = web.AppKey("tickrun_runs_s3", S3Settings)
MAX_BATCH_BYTES = 32 * 1024 * 1024
MAX_LIMIT = 10000
# A stored log is at most ~1 MiB of characters (runlog.MAX_CHARS); room for multi-byte ones.
MAX_LOG_BYTES = 4 * 1024 * 1024


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


def _limit(request: web.Request, default: int) -> int:
    # Above MAX_LIMIT is clamped (clients ask for "everything"); below 1 or beyond int64 is a 400.
    value = int_param(request.query, "limit", default, lo=1)
    return min(value if value is not None else default, MAX_LIMIT)


def _db(request: web.Request) -> RunDB:
    return request.app[DB_KEY]


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def _search(request: web.Request) -> RunSearch | None:
    """The runs table's search, for a SQL run DB (its index is made on the first search)."""
    return request.app.get(SEARCH_KEY)


@_guard
async def list_runs(request: web.Request) -> web.StreamResponse:
    q = request.query
    search = None if LEGACY_PARAMS & set(q) else _search(request)
    if search is not None:
        # The runs table: filters, sort by any param or result, pages and a total.
        query = parse_query(q.items())
        page = await _call(search.search, query)
        return web.json_response(
            {
                "runs": page.runs,
                "total": page.total,
                "total_capped": page.total_capped,
                "columns": {"params": page.params, "results": page.results},
                "offset": query.offset,
                "limit": query.limit,
                "indexing": page.indexing,
            }
        )
    runs = await _call(
        _db(request).list_runs,
        q.get("project") or None,
        uid=q.get("uid") or None,
        state=q.get("state") or None,
        name=q.get("name") or None,
        iterations=q.get("iterations") in ("1", "true"),
        limit=_limit(request, 100),
        label=q.get("label") or None,
    )
    return web.json_response({"runs": [r.model_dump(mode="json") for r in runs]})


@_guard
async def get_run(request: web.Request) -> web.StreamResponse:
    uid = request.match_info["uid"]
    iteration = int_param(request.query, "iteration", 0) or 0
    db = _db(request)
    run = await _call(db.get_run, uid, iteration)
    out: dict[str, Any] = {"run": run.model_dump(mode="json")}
    if iteration == 0:
        its = await _call(db.list_runs, None, uid=uid, limit=10000)
        out["iterations"] = [r.model_dump(mode="json") for r in its if r.iteration > 0]
    return web.json_response(out)


def _read_log(app: web.Application, target: str, limit: int) -> bytes:
    """The first ``limit`` bytes of a log artifact's object (file or S3: blocking I/O)."""
    store, key = split_url(app[ROOTS_KEY].check(target), app.get(S3_KEY))
    try:
        return store.head(key, limit)
    except FileNotFoundError:
        raise NotFoundError("the run's log file is gone") from None


@_guard
async def get_log(request: web.Request) -> web.StreamResponse:
    """The run's own log (runlog.py) as text/plain; ``download=1`` as an attachment.

    ``X-Tickrun-Log: live`` while the run is created/running and its log is not the final one
    (the text published so far: empty, not a 404, before the first line); ``final`` once the
    run has ended or its complete log is stored (a run whose process died keeps the last text
    it published). A run that ended without a log is a 404, or with ``empty=1`` an empty 200."""
    uid = request.match_info["uid"]
    iteration = int_param(request.query, "iteration", 0, lo=0) or 0
    db = _db(request)
    run = await _call(db.get_run, uid, iteration)
    arts = await _call(
        db.list_artifacts, run.project, uid=uid, iteration=iteration, kind="log", limit=10
    )
    rec = max(arts, key=lambda a: a.created_at) if arts else None
    # A log stored before live logs existed has no "final" in its meta: the run's state says.
    final = run.state.terminal or (rec is not None and rec.meta.get("final") is True)
    # empty=1 (the UI following a run): "nothing logged" is an empty text, never a 404.
    if rec is None and final and request.query.get("empty") not in ("1", "true"):
        raise NotFoundError(f"run {uid} iteration {iteration} has no log")
    data = b"" if rec is None else await _call(_read_log, request.app, rec.target, MAX_LOG_BYTES)
    headers = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "X-Tickrun-Log": "final" if final else "live",
    }
    if rec is not None and rec.meta.get("from_iteration"):
        headers["X-Tickrun-Log-Iteration"] = str(rec.meta["from_iteration"])
    if request.query.get("download") in ("1", "true"):
        name = f"{uid}-{iteration}.log" if iteration else f"{uid}.log"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return web.Response(
        text=data.decode("utf-8", errors="replace"),
        content_type="text/plain",
        charset="utf-8",
        headers=headers,
    )


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
    roots = request.app[ROOTS_KEY]
    for art in batch.artifacts:
        try:
            # In a thread: resolving a path stats the filesystem.
            await _call(roots.check, art.target)
        except ArtifactTargetError as exc:
            raise ArtifactTargetError(
                f"artifact {art.project}/{art.uid}/{art.iteration}/{art.key}: {exc.message}"
            ) from None
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
        iteration=int_param(q, "iteration"),
        key=q.get("key") or None,
        kind=q.get("kind") or None,
        limit=_limit(request, 1000),
    )
    return web.json_response({"artifacts": [a.model_dump(mode="json") for a in arts]})


@_guard
async def get_artifact(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    iteration = int_param(m, "iteration", 0) or 0
    rec = await _call(_db(request).get_artifact, m["project"], m["uid"], iteration, m["key"])
    return web.json_response({"artifact": rec.model_dump(mode="json")})


def add_routes(app: web.Application, db: RunDB, roots: ArtifactRoots | None = None) -> None:
    """Mount ``/api/runs`` and ``/api/artifacts`` on ``app``, backed by ``db``.

    Artifact records must point into ``roots``; by default the stores this process is configured
    with (``TICKRUN_ARTIFACT_PATH`` or ``$TICKRUN_HOME/artifacts``, plus
    ``TICKRUN_ARTIFACT_STORES``).
    """
    app[DB_KEY] = db
    settings = TrackingSettings.from_env()
    app[ROOTS_KEY] = roots if roots is not None else settings.artifact_roots()
    app[S3_KEY] = settings.s3  # reading run logs stored on S3
    if isinstance(db, SqlRunDB):
        app[SEARCH_KEY] = RunSearch(lambda: db.engine, db.mark_stale)
    r = app.router
    r.add_get("/api/runs", list_runs)
    r.add_post("/api/runs", post_runs)
    r.add_post("/api/runs/_stale", mark_stale)
    r.add_get("/api/runs/{uid}", get_run)
    r.add_get("/api/runs/{uid}/log", get_log)
    r.add_get("/api/artifacts", list_artifacts)
    r.add_get("/api/artifacts/{project}/{uid}/{iteration}/{key}", get_artifact)
    # The model registry lives in the same run DB: /api/models, /api/model-versions.
    registry_api.add_routes(app, db)
