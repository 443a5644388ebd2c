"""Artifact previews and downloads for the UI (controller and ``tickrun ui``).

``GET /api/artifacts/{project}/{uid}/{iteration}/{key}/preview``: by kind —

- an image (a plot, or a ``png/jpg/gif/webp/svg`` file): its bytes, with its image type (SVG with
  a ``sandbox`` CSP: a script in it never runs);
- a dataset or table: JSON ``{kind, format, schema, stats, rows, columns, shape}`` from the
  record (written when it was logged: no file is read);
- a model: JSON ``{kind, format, meta, lineage}`` (the run, its inputs' datasets and code, as the
  registry records them);
- anything else: JSON ``{kind, format, size_bytes, text}`` with the first 64 KiB as text when
  it is text, else ``text: null``.

``GET …/{key}/rows?offset=&limit=``: a page of a dataset's or table's rows (csv, parquet, json;
``artifact_rows.py``), for what the preview's first rows don't show.

``GET …/{key}/download``: the bytes as an attachment. Both read the record's target only after
checking it lies in the configured artifact stores (a record names where readers go).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from tickrun.functions.artifacts import split_url
from tickrun.functions.errors import BadRequestError, NotFoundError
from tickrun.functions.queryparams import int_param
from tickrun.functions.runs.api import DB_KEY, ROOTS_KEY
from tickrun.functions.runs.records import ArtifactKind, ArtifactRecord
from tickrun.functions.runs.settings import TrackingSettings

from .artifact_rows import MAX_PAGE_ROWS, page_rows

logger = logging.getLogger(__name__)

SETTINGS_KEY: web.AppKey[TrackingSettings] = web.AppKey("tickrun_ui_tracking", TrackingSettings)
IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "svg": "image/svg+xml",
}
MAX_IMAGE_BYTES = 20 * 1024 * 1024
TEXT_BYTES = 64 * 1024
MAX_DOWNLOAD_BYTES = 2 * 1024 * 1024 * 1024
# A table is paged in the controller's memory: bigger ones are downloaded instead.
MAX_ROWS_BYTES = 256 * 1024 * 1024


async def _record(request: web.Request) -> ArtifactRecord:
    m = request.match_info
    iteration = int_param(m, "iteration", 0) or 0
    db = request.app[DB_KEY]
    return await asyncio.to_thread(db.get_artifact, m["project"], m["uid"], iteration, m["key"])


def _format(rec: ArtifactRecord) -> str:
    fmt = (rec.format or "").lower().lstrip(".")
    if not fmt and "." in rec.target.rsplit("/", 1)[-1]:
        fmt = rec.target.rsplit(".", 1)[-1].lower()
    return fmt


def _read(request: web.Request, rec: ArtifactRecord, limit: int) -> bytes:
    """At most ``limit`` bytes of the record's object (in a thread: file or S3 I/O)."""
    target = request.app[ROOTS_KEY].check(rec.target)
    settings = request.app.get(SETTINGS_KEY)
    store, key = split_url(target, settings.s3 if settings else None)
    try:
        return store.head(key, limit)
    except FileNotFoundError:
        raise NotFoundError(f"artifact {rec.key!r}: its file is gone") from None


def _lineage(request: web.Request, rec: ArtifactRecord) -> dict[str, Any] | None:
    from tickrun.functions.runs.db.lineage import build_lineage

    try:
        return build_lineage(request.app[DB_KEY], rec).model_dump(mode="json")
    except Exception:  # lineage is a nicety: a preview without it still helps
        logger.info("no lineage for a model preview", extra={"artifact": rec.key[:100]})
        return None


async def preview(request: web.Request) -> web.StreamResponse:
    rec = await _record(request)
    fmt = _format(rec)
    base = {"kind": rec.kind.value, "format": fmt, "size_bytes": rec.size_bytes, "key": rec.key}
    if fmt in IMAGE_TYPES and (rec.kind in (ArtifactKind.PLOT, ArtifactKind.FILE)):
        if rec.size_bytes > MAX_IMAGE_BYTES:
            raise BadRequestError(f"image over {MAX_IMAGE_BYTES} bytes: download it instead")
        data = await asyncio.to_thread(_read, request, rec, MAX_IMAGE_BYTES)
        headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
        if fmt == "svg":
            headers["Content-Security-Policy"] = (
                "sandbox; default-src 'none'; style-src 'unsafe-inline'"
            )
        return web.Response(body=data, content_type=IMAGE_TYPES[fmt], headers=headers)
    if rec.kind in (ArtifactKind.DATASET, ArtifactKind.TABLE):
        meta = rec.meta or {}
        rows = rec.preview if isinstance(rec.preview, list) else []
        columns = list(meta.get("schema") or {}) or (
            list(rows[0]) if rows and isinstance(rows[0], dict) else []
        )
        return web.json_response(
            {
                **base,
                "schema": meta.get("schema"),
                "stats": meta.get("stats"),
                "shape": {"rows": meta.get("rows"), "columns": meta.get("columns")},
                "columns": columns,
                "rows": rows,
                "meta": {k: v for k, v in meta.items() if k not in ("schema", "stats")},
            }
        )
    if rec.kind is ArtifactKind.MODEL:
        lineage = await asyncio.to_thread(_lineage, request, rec)
        return web.json_response(
            {**base, "meta": rec.meta, "lineage": lineage, "labels": rec.labels}
        )
    text = rec.preview if isinstance(rec.preview, str) else None
    if text is None and rec.size_bytes <= 50 * 1024 * 1024:
        raw = await asyncio.to_thread(_read, request, rec, TEXT_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return web.json_response({**base, "text": text, "truncated": rec.size_bytes > TEXT_BYTES})


async def rows(request: web.Request) -> web.Response:
    rec = await _record(request)
    if rec.kind not in (ArtifactKind.DATASET, ArtifactKind.TABLE):
        raise BadRequestError(f"artifact {rec.key!r} is a {rec.kind.value}, not a table")
    offset = int_param(request.query, "offset", 0) or 0
    limit = min(int_param(request.query, "limit", 100, lo=1) or 100, MAX_PAGE_ROWS)
    if rec.size_bytes > MAX_ROWS_BYTES:
        raise BadRequestError(f"table over {MAX_ROWS_BYTES} bytes: download it instead")
    data = await asyncio.to_thread(_read, request, rec, MAX_ROWS_BYTES + 1)
    if len(data) > MAX_ROWS_BYTES:  # the record's size was stale
        raise BadRequestError(f"table over {MAX_ROWS_BYTES} bytes: download it instead")
    page = await asyncio.to_thread(page_rows, data, _format(rec), offset, limit)
    return web.json_response(
        {
            "key": rec.key,
            "columns": page.columns,
            "rows": page.rows,
            "offset": page.offset,
            "total": page.total,
        }
    )


async def download(request: web.Request) -> web.StreamResponse:
    rec = await _record(request)
    target = request.app[ROOTS_KEY].check(rec.target)
    settings = request.app.get(SETTINGS_KEY)
    store, key = split_url(target, settings.s3 if settings else None)
    fmt = _format(rec)
    name = rec.key.replace('"', "_") + (f".{fmt}" if fmt and not rec.key.endswith(fmt) else "")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-Type-Options": "nosniff",
        }
    )
    chunks = iter(await asyncio.to_thread(lambda: store.stream(key)))
    sent = 0
    started = False
    while True:
        try:
            chunk = await asyncio.to_thread(next, chunks, None)
        except FileNotFoundError:
            if started:
                break
            raise NotFoundError(f"artifact {rec.key!r}: its file is gone") from None
        if chunk is None:
            break
        if not started:
            await resp.prepare(request)
            started = True
        sent += len(chunk)
        if sent > MAX_DOWNLOAD_BYTES:
            break
        await resp.write(chunk)
    if not started:
        await resp.prepare(request)
    await resp.write_eof()
    return resp


def add_artifact_routes(app: web.Application, settings: TrackingSettings | None = None) -> None:
    if settings is not None:
        app[SETTINGS_KEY] = settings
    base = "/api/artifacts/{project}/{uid}/{iteration}/{key}"
    app.router.add_get(base + "/preview", preview)
    app.router.add_get(base + "/rows", rows)
    app.router.add_get(base + "/download", download)


__all__ = ["add_artifact_routes", "download", "preview", "rows"]
