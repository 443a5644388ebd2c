"""The controller app in-process (aiohttp test server): auth, JSON errors, API shapes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.app import create_app
from tickrun.controller.builder.hashing import pack_dir
from tickrun.controller.settings import Settings

AUTH = {"Authorization": "Bearer sekret"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        token="sekret",
        container_engine="podman",
    )
    app = create_app(settings)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_health_and_openapi_are_open_everything_else_needs_the_token(
    client: TestClient,
) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/api/openapi.json")).status == 200
    hub = await client.get("/api/hub")  # the read-only hub catalogue is public
    assert hub.status == 200 and "items" in await hub.json()
    runs = await client.get("/api/runs")  # tracked runs are not
    assert runs.status == 401
    for path in ("/api/functions", "/fn/x/", "/api/version"):
        resp = await client.get(path)
        assert resp.status == 401
        body = await resp.json()
        assert body["error"] == "AuthError" and "Bearer" in body["detail"]
    resp = await client.get("/api/functions", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401


async def test_errors_are_json(client: TestClient) -> None:
    resp = await client.get("/api/functions/ghost", headers={**AUTH, "X-Request-Id": "rq-1"})
    assert resp.status == 404
    assert await resp.json() == {
        "error": "NotFoundError",
        "detail": "function 'ghost' not found",
        "request_id": "rq-1",
    }
    assert resp.headers.getall("X-Request-Id") == ["rq-1"]
    resp = await client.get("/api/functions/ghost", headers={**AUTH, "X-Request-Id": "a b/c"})
    minted = (await resp.json())["request_id"]  # not a sane id: a fresh one instead
    assert minted != "a b/c" and resp.headers.getall("X-Request-Id") == [minted]
    resp = await client.get("/api/nothing-here", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "Not Found"
    resp = await client.patch("/api/functions", headers=AUTH)
    assert resp.status == 405 and "error" in await resp.json()
    resp = await client.post("/api/functions", headers=AUTH, json={"spec": {}, "junk": 1})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "SpecError" and {f["field"] for f in body["fields"]} == {"junk"}
    resp = await client.post(
        "/api/functions", headers=AUTH, json={"spec": {"metadata": {"name": "x"}}, "code": "!!!"}
    )
    assert resp.status == 400 and "base64" in (await resp.json())["detail"]
    resp = await client.get("/api/functions/ghost/events?after=abc", headers=AUTH)
    assert resp.status == 400
    resp = await client.get("/fn/ghost/", headers=AUTH)
    assert resp.status == 404


async def test_deploy_records_function_build_and_events(client: TestClient, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("def handler(context, event):\n    return 'hi'\n")
    code = base64.b64encode(pack_dir(src)).decode()
    spec = {"metadata": {"name": "hi"}, "spec": {"replicas": 0}}
    resp = await client.post("/api/functions", headers=AUTH, json={"spec": spec, "code": code})
    assert resp.status == 202
    body = await resp.json()
    assert body["function"]["state"] == "building" and body["build"]["state"] == "running"
    # replicas: 0 → nothing is started, but the build still runs and is recorded
    for _ in range(100):
        fn = await (await client.get("/api/functions/hi", headers=AUTH)).json()
        if fn["state"] == "ready":
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert fn["state"] == "ready" and fn["replicas"]["desired"] == 0
    assert fn["last_build"]["state"] == "succeeded"
    log = await (await client.get(f"/api/builds/{body['build']['id']}/log", headers=AUTH)).text()
    assert "environment:" in log
    events = (await (await client.get("/api/functions/hi/events", headers=AUTH)).json())["events"]
    assert [e["kind"] for e in events][:2] == ["deploy", "build"]
    exported = await (await client.get("/api/functions/hi/export", headers=AUTH)).json()
    assert exported["metadata"]["name"] == "hi" and exported["kind"] == "NuclioFunction"
    # name in the URL must match metadata.name
    resp = await client.put("/api/functions/other", headers=AUTH, json={"spec": spec})
    assert resp.status == 400 and "does not match" in (await resp.json())["detail"]
    resp = await client.get("/fn/hi/", headers=AUTH)
    assert resp.status == 503 and "no ready replica" in (await resp.json())["detail"]
    assert (await client.delete("/api/functions/hi", headers=AUTH)).status == 200
    assert (await client.get("/api/functions/hi", headers=AUTH)).status == 404
