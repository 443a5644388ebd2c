"""The controller app in-process: /api/secrets, secret references in deploys, upload limits,
isolation in /api/version, and the state dir's modes."""

from __future__ import annotations

import base64
import io
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.app import create_app
from tickrun.controller.builder.hashing import pack_dir
from tickrun.controller.settings import Settings

AUTH = {"Authorization": "Bearer sekret"}
Client = TestClient[web.Request, web.Application]
VALUE = "value-that-must-stay-in-the-secret-store"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", token="sekret")
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


def _spec(name: str) -> dict[str, Any]:
    ref = {"secretKeyRef": {"name": "exchange", "key": "api-key"}}
    return {
        "metadata": {"name": name},
        "spec": {
            "handler": "main:handler",
            "replicas": 0,
            "env": [{"name": "K", "valueFrom": ref}],
        },
    }


def _code(tmp_path: Path) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "main.py").write_text("def handler(context, event):\n    return 'ok'\n")
    return base64.b64encode(pack_dir(src)).decode()


async def test_secrets_go_in_and_only_their_keys_come_out(client: Client) -> None:
    put = await client.put("/api/secrets/exchange", json={"data": {"api-key": VALUE}}, headers=AUTH)
    assert put.status == 200 and await put.json() == {"name": "exchange", "keys": ["api-key"]}
    for path in ("/api/secrets", "/api/secrets/exchange"):
        res = await client.get(path, headers=AUTH)
        assert res.status == 200 and VALUE not in await res.text()
    assert (await client.get("/api/secrets", headers={})).status == 401
    bad = await client.put(
        "/api/secrets/exchange", json={"data": {"k": 1}, "x": VALUE}, headers=AUTH
    )
    assert bad.status == 400 and VALUE not in await bad.text()
    assert (
        await client.put("/api/secrets/Bad_Name", json={"data": {"k": "v"}}, headers=AUTH)
    ).status == 400
    assert (await client.put("/api/secrets/x", data=b"{nope", headers=AUTH)).status == 400
    assert (await client.delete("/api/secrets/exchange", headers=AUTH)).status == 200
    assert (await client.get("/api/secrets/exchange", headers=AUTH)).status == 404


async def test_a_deploy_keeps_the_reference_and_never_the_value(
    client: Client, tmp_path: Path
) -> None:
    body = {"spec": _spec("fx"), "code": _code(tmp_path)}
    missing = await client.post("/api/functions", json=body, headers=AUTH)
    assert missing.status == 400
    assert "secret 'exchange' key 'api-key', which is not set" in (await missing.json())["detail"]
    await client.put("/api/secrets/exchange", json={"data": {"api-key": VALUE}}, headers=AUTH)
    res = await client.post("/api/functions", json=body, headers=AUTH)
    assert res.status == 202
    fn = await (await client.get("/api/functions/fx", headers=AUTH)).json()
    exported = await (await client.get("/api/functions/fx/export", headers=AUTH)).json()
    for spec in (fn["spec"], exported):
        assert spec["spec"]["env"] == [_spec("fx")["spec"]["env"][0]]
    state = tmp_path / "state"
    for name in ("tickrun.db", "tickrun.db-wal"):
        if (state / name).exists():
            assert VALUE.encode() not in (state / name).read_bytes()
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    assert VALUE.encode() in (state / "secrets.json").read_bytes()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for folder in ("code", "logs", "builds"):
        assert stat.S_IMODE((state / folder).stat().st_mode) == 0o700


async def test_a_code_bomb_gets_a_413_json_error(client: Client) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(20_001):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    body = {
        "spec": {"metadata": {"name": "bomb"}, "spec": {"handler": "main:handler"}},
        "code": base64.b64encode(buf.getvalue()).decode(),
    }
    res = await client.post("/api/functions", json=body, headers=AUTH)
    assert res.status == 413
    data = await res.json()
    assert data["error"] == "BodyTooLargeError"
    assert data["detail"] == "function code archive has more than 20000 entries"


async def test_version_reports_how_replicas_are_isolated(client: Client) -> None:
    info = await (await client.get("/api/version", headers=AUTH)).json()
    assert info["isolation"]["process"]["mechanism"] == "bubblewrap"
