"""TICKRUN_PLATFORMS turns platforms off: the controller neither offers nor deploys to them (a
clear 400 naming the variable), and one offered platform becomes the default."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.app import create_app
from tickrun.controller.builder.hashing import pack_dir
from tickrun.controller.settings import Settings
from tickrun.functions.errors import SpecError
from tickrun.functions.settings import HOME, KUBECONFIG, OFFERED_PLATFORMS, PLATFORM

AUTH = {"Authorization": "Bearer sekret"}
Client = TestClient[web.Request, web.Application]


def _settings(tmp_path: Path, **env: str) -> Settings:
    base = {HOME.name: str(tmp_path / "home")}
    return Settings.from_env({**base, **env}, token="sekret", function_ports=False)


@pytest.fixture
async def process_only(tmp_path: Path) -> AsyncIterator[Client]:
    # "container" is turned off even where podman is installed.
    settings = _settings(tmp_path, **{OFFERED_PLATFORMS.name: "process"})
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


def _body(tmp_path: Path, platform: str | None, **fields: Any) -> dict[str, Any]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "main.py").write_text("def handler(context, event):\n    return 'hi'\n")
    body: dict[str, Any] = {
        "spec": {"metadata": {"name": "off-fn"}, "spec": {"handler": "main:handler", **fields}},
        "code": base64.b64encode(pack_dir(src)).decode(),
    }
    if platform:
        body["platform"] = platform
    return body


async def test_a_turned_off_platform_is_not_offered_and_refused_with_a_400(
    process_only: Client, tmp_path: Path
) -> None:
    version = await (await process_only.get("/api/version", headers=AUTH)).json()
    assert version["platforms"] == ["process"]
    assert version["default_platform"] == "process"
    resp = await process_only.post(
        "/api/functions", json=_body(tmp_path, "container"), headers=AUTH
    )
    assert resp.status == 400
    text = await resp.text()
    assert "container platform is turned off" in text and OFFERED_PLATFORMS.name in text
    listed = await (await process_only.get("/api/functions", headers=AUTH)).json()
    assert "off-fn" not in str(listed)


async def test_the_offered_platform_still_deploys(process_only: Client, tmp_path: Path) -> None:
    resp = await process_only.post("/api/functions", json=_body(tmp_path, None), headers=AUTH)
    assert resp.status == 202
    assert (await resp.json())["function"]["platform"] == "process"
    await process_only.delete("/api/functions/off-fn", headers=AUTH)


def test_one_offered_platform_is_the_default(tmp_path: Path) -> None:
    s = _settings(tmp_path, **{OFFERED_PLATFORMS.name: "kubernetes"})
    assert s.platforms == ("kubernetes",) and s.default_platform == "kubernetes"
    assert s.offers("kubernetes") and not s.offers("process")
    everything = _settings(tmp_path)
    assert everything.platforms is None and everything.offers("container")


def test_a_default_outside_the_offered_platforms_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not among the offered platforms"):
        _settings(tmp_path, **{OFFERED_PLATFORMS.name: "kubernetes", PLATFORM.name: "process"})
    with pytest.raises(SpecError, match=OFFERED_PLATFORMS.name):
        _settings(tmp_path, **{OFFERED_PLATFORMS.name: "process,cloud"})


async def test_a_stored_function_on_a_turned_off_platform_is_logged_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _settings(tmp_path, **{OFFERED_PLATFORMS.name: "process"})
    async with TestClient(TestServer(create_app(first))) as c:
        # replicas 0: no replica process outlives this controller
        body = _body(tmp_path, "process", replicas=0)
        resp = await c.post("/api/functions", json=body, headers=AUTH)
        assert resp.status == 202
    # Restarted offering only kubernetes (a kubeconfig that is never read here).
    kubeconfig = tmp_path / "absent.kubeconfig"
    second = _settings(
        tmp_path, **{OFFERED_PLATFORMS.name: "kubernetes", KUBECONFIG.name: str(kubeconfig)}
    )
    caplog.set_level(logging.WARNING, logger="tickrun.controller.app")
    async with TestClient(TestServer(create_app(second))) as c:
        version = await (await c.get("/api/version", headers=AUTH)).json()
        assert version["platforms"] == ["kubernetes"]
    [record] = [r for r in caplog.records if "platform is not offered" in r.getMessage()]
    assert (record.function, record.platform) == ("off-fn", "process")  # type: ignore[attr-defined]
