"""The model registry's REST API over real loopback HTTP: shapes, status codes, the bearer check of
the mounting app, and the controller's OpenAPI document describing every route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate

from tests.support.registry_contract import logged_model
from tickrun.controller.openapi import document
from tickrun.functions.artifacts import ArtifactRoots
from tickrun.functions.runs import ArtifactKind, SqlRunDB
from tickrun.functions.runs.api import add_routes

TOKEN = "t0ken-for-tests"


@web.middleware
async def bearer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Stands in for the controller's auth middleware.
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.json_response({"error": "AuthError", "detail": "bad token"}, status=401)
    return await handler(request)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    """(base URL, a logged model's store:// URI, a logged dataset's)."""
    store = tmp_path / "store"
    db = SqlRunDB(f"sqlite:///{tmp_path / 'server.db'}")
    model = await asyncio.to_thread(logged_model, db, str(store), "r1")
    data = await asyncio.to_thread(logged_model, db, str(store), "d1", kind=ArtifactKind.DATASET)
    app = web.Application(middlewares=[bearer])
    add_routes(app, db, ArtifactRoots.of([store]))
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), model, data
    finally:
        await srv.close()
        db.close()


async def _call(
    method: str, url: str, body: Any = None, *, token: str | None = TOKEN, raw: bytes | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        kw: dict[str, Any] = {"json": body} if body is not None else {"data": raw}
        async with s.request(method, url, headers=headers, **kw) as resp:
            return resp.status, await resp.json()


async def test_rest_shapes_and_errors(api: tuple[str, str, str]) -> None:
    base, model, data = api
    status, got = await _call("POST", f"{base}/api/models", {"model_uri": model, "name": "m"})
    assert status == 201 and got["version"]["version"] == 1
    assert got["version"]["model_uri"] == model and got["version"]["lineage"]["run_uid"] == "r1"
    status, got = await _call(
        "POST", f"{base}/api/models", {"model_uri": model, "name": "m", "aliases": ["champion"]}
    )
    assert status == 201 and got["version"]["aliases"] == ["champion"]

    status, got = await _call("GET", f"{base}/api/models")
    assert status == 200 and got["models"][0]["aliases"] == {"champion": 2}
    status, got = await _call("GET", f"{base}/api/models/m/versions/champion")
    assert status == 200 and got["version"]["version"] == 2
    status, got = await _call("GET", f"{base}/api/model-versions?name=m&limit=1")
    assert status == 200 and [v["version"] for v in got["versions"]] == [2]
    status, got = await _call("PUT", f"{base}/api/models/m/aliases/champion", {"version": 1})
    assert status == 200 and got["version"]["aliases"] == ["champion"]

    bad: list[tuple[str, str, Any, int]] = [
        ("POST", "/api/models", {"model_uri": model, "name": "m", "extra": 1}, 400),
        ("POST", "/api/models", {"model_uri": model, "name": "a@b"}, 400),
        ("POST", "/api/models", {"model_uri": model, "name": "m", "aliases": ["latest"]}, 400),
        ("POST", "/api/models", {"model_uri": data, "name": "m"}, 400),
        ("POST", "/api/models", {"model_uri": "store://p/none/model", "name": "m"}, 404),
        ("GET", "/api/models/nope", None, 404),
        ("GET", "/api/models/m/versions/9", None, 404),
        ("GET", "/api/models/m/versions/1st", None, 400),
        ("GET", "/api/models/m/versions/prod", None, 404),
        ("GET", "/api/model-versions?tag=novalue", None, 400),
        ("GET", "/api/model-versions?limit=0", None, 400),
        ("PUT", "/api/models/m/aliases/champion", {"version": 0}, 400),
        ("PUT", "/api/models/m/aliases/champion", {"version": 1, "x": 1}, 400),
        ("PUT", "/api/models/m/aliases/latest", {"version": 1}, 400),
        ("PUT", "/api/models/m/aliases/prod", {"version": 7}, 404),
        ("PUT", "/api/models/nope/aliases/prod", {"version": 1}, 404),
        ("DELETE", "/api/models/m/aliases/prod", None, 404),
        ("DELETE", "/api/models/m/versions/1", None, 409),
        ("DELETE", "/api/models/m/versions/x", None, 400),
        ("DELETE", "/api/models/m/versions/5", None, 404),
    ]
    for method, path, body, want in bad:
        status, got = await _call(method, base + path, body)
        assert status == want, (method, path, status, got)
        assert set(got) >= {"error", "detail"}, got
    status, got = await _call("POST", f"{base}/api/models", raw=b"{not json")
    assert status == 400 and got["error"] == "BadRequestError"
    status, _ = await _call("GET", f"{base}/api/models", token=None)
    assert status == 401
    status, _ = await _call("PUT", f"{base}/api/models/m/aliases/x", {"version": 1}, token="no")
    assert status == 401

    status, got = await _call("DELETE", f"{base}/api/models/m/versions/1?force=1")
    assert status == 200 and got["deleted"] == {"name": "m", "version": 1}
    status, got = await _call("GET", f"{base}/api/models/m")
    assert status == 200 and got["model"]["aliases"] == {} and got["model"]["versions"] == 1


def test_openapi_describes_the_registry_routes() -> None:
    doc = document()
    validate(doc)
    app = web.Application()
    add_routes(app, SqlRunDB("sqlite://"), ArtifactRoots.of([]))
    routes = {
        (str(r.resource.get_info().get("path") or r.resource.get_info().get("formatter")), r.method)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    registry = {(p, m) for p, m in routes if p.startswith(("/api/models", "/api/model-versions"))}
    assert len(registry) == 8
    for path, method in registry:
        assert method.lower() in doc["paths"][path], (method, path)
    post = doc["paths"]["/api/models"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False and set(schema["required"]) == {
        "model_uri",
        "name",
    }
