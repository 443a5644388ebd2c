"""Deploys say which spec fields their platform accepts without acting on them, and a platform
the controller does not offer is a clear 400 (through the in-process app)."""

from __future__ import annotations

import base64
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


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        token="sekret",
        function_ports=False,
    )
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


def _body(tmp_path: Path, spec: dict[str, Any], platform: str | None = None) -> dict[str, Any]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "main.py").write_text("def handler(context, event):\n    return 'hi'\n")
    body: dict[str, Any] = {
        "spec": {"metadata": {"name": "gpu-fn"}, "spec": {"handler": "main:handler", **spec}},
        "code": base64.b64encode(pack_dir(src)).decode(),
    }
    if platform:
        body["platform"] = platform
    return body


async def test_fields_the_process_platform_does_not_act_on_are_warned(
    client: Client, tmp_path: Path
) -> None:
    spec = {
        "resources": {"limits": {"nvidia.com/gpu": 1}},
        "targetCPU": 60,
        "minReplicas": 1,
        "maxReplicas": 2,
    }
    resp = await client.post("/api/functions", json=_body(tmp_path, spec), headers=AUTH)
    assert resp.status == 202
    warnings = (await resp.json())["warnings"]
    assert warnings == [
        "spec field nvidia.com/gpu is accepted but not acted on by the process platform",
        "spec field targetCPU is accepted but not acted on by the process platform",
    ]
    events = await (await client.get("/api/functions/gpu-fn/events", headers=AUTH)).json()
    assert [e["message"] for e in events["events"] if e["kind"] == "warning"] == warnings
    await client.delete("/api/functions/gpu-fn", headers=AUTH)


async def test_a_plain_spec_deploys_without_warnings(client: Client, tmp_path: Path) -> None:
    resp = await client.post("/api/functions", json=_body(tmp_path, {}), headers=AUTH)
    assert resp.status == 202
    assert (await resp.json())["warnings"] == []
    await client.delete("/api/functions/gpu-fn", headers=AUTH)


async def test_kubernetes_without_a_cluster_is_a_clear_400(client: Client, tmp_path: Path) -> None:
    version = await (await client.get("/api/version", headers=AUTH)).json()
    assert "kubernetes" not in version["platforms"]
    resp = await client.post("/api/functions", json=_body(tmp_path, {}, "kubernetes"), headers=AUTH)
    assert resp.status == 400
    body = await resp.json()
    assert "kubernetes platform is not available" in body["detail"]
    assert "TICKRUN_KUBECONFIG" in body["detail"]
