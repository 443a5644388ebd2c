"""Serving a hub catalogue over HTTP: ``GET /api/hub`` (the index) and the item files.

The controller mounts this with ``tickrun.hub.api.add_routes(app)``; any tickrun can then use it
as a remote hub (``TICKRUN_HUB_URL=https://controller:8070``; plain http needs
``TICKRUN_HUB_ALLOW_HTTP=1`` on the client). Only files the index lists are served, and only when
they resolve inside their item's folder, so a request can never read outside it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from tickrun.functions.errors import HubError, SpecError

from .catalogue import BUNDLED_ROOT, latest_of
from .sources import API_PATH, LocalSource
from .versions import Version

logger = logging.getLogger(__name__)

HUB_KEY: web.AppKey[list[LocalSource]] = web.AppKey("tickrun.hub.sources", list)


def add_routes(
    app: web.Application,
    *,
    roots: Sequence[str | Path] | None = None,
    prefix: str = API_PATH,
) -> None:
    """Serve the hub folders ``roots`` (default: the bundled catalogue) under ``prefix``.

    With several roots the first one wins for a name/version present in more than one.
    """
    sources = [LocalSource(r) for r in (roots if roots is not None else [BUNDLED_ROOT])]
    app[HUB_KEY] = sources
    app.router.add_get(prefix, _index)
    app.router.add_get(prefix + "/items/{name}/{version}", _item)
    app.router.add_get(prefix + "/items/{name}/{version}/{file:.+}", _file)


def _merged(sources: list[LocalSource]) -> tuple[dict[str, Any], dict[tuple[str, str], Path]]:
    items: dict[str, Any] = {}
    folders: dict[tuple[str, str], Path] = {}
    for source in sources:
        try:
            # Rebuilt when a file changed (catalogue.cached_index), so it can break while the
            # server runs: a folder holding a bad item, or gone, is left out until mended.
            index = source.index()
        except (SpecError, HubError) as exc:
            logger.warning(
                "hub folder left out of the served catalogue",
                extra={"hub": source.label, "reason": exc.message},
            )
            continue
        for name, entry in index["items"].items():
            target = items.setdefault(name, {"versions": {}})
            for version, meta in entry["versions"].items():
                if version not in target["versions"]:
                    target["versions"][version] = meta
                    folders[(name, version)] = source.root / meta["path"]
    for entry in items.values():
        ordered = sorted(entry["versions"], key=Version.parse, reverse=True)
        entry["versions"] = {v: entry["versions"][v] for v in ordered}
        entry["latest"] = latest_of(entry["versions"])
    return {"schema": 1, "items": dict(sorted(items.items()))}, folders


async def _index(request: web.Request) -> web.Response:
    index, _ = _merged(request.app[HUB_KEY])
    return web.json_response(index)


def _not_found(detail: str) -> web.Response:
    return web.json_response({"error": "NotFoundError", "detail": detail}, status=404)


async def _item(request: web.Request) -> web.Response:
    """One version's item.yaml, parsed (``item``) and as written (``yaml``): what a browser
    shows of an item without a YAML parser of its own."""
    import yaml  # only this endpoint needs it

    name, version = request.match_info["name"], request.match_info["version"]
    index, folders = _merged(request.app[HUB_KEY])
    if index["items"].get(name, {}).get("versions", {}).get(version) is None:
        return _not_found(f"no hub item {name}:{version}")
    folder = folders[(name, version)].resolve()
    path = (folder / "item.yaml").resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        return _not_found(f"{name}:{version} has no item.yaml")
    text = path.read_text(encoding="utf-8")
    return web.json_response({"item": yaml.safe_load(text), "yaml": text})


async def _file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    version = request.match_info["version"]
    file = request.match_info["file"]
    index, folders = _merged(request.app[HUB_KEY])
    meta = index["items"].get(name, {}).get("versions", {}).get(version)
    if meta is None:
        return _not_found(f"no hub item {name}:{version}")
    if file not in meta["files"]:
        return _not_found(f"{name}:{version} has no file {file!r}")
    folder = folders[(name, version)].resolve()
    path = (folder / file).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        # Listed, but swapped for a link out of the item since the index was built.
        return _not_found(f"{name}:{version} has no file {file!r}")
    return web.FileResponse(
        path,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
