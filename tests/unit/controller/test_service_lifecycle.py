"""Delete during a build, delete → re-create, and deletes interrupted by a controller crash,
through the in-process app (aiohttp test server)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.controller_rows import function_row, replica_row
from tickrun.controller import api
from tickrun.controller.app import create_app
from tickrun.controller.builder import BuildResult
from tickrun.controller.builder.hashing import pack_dir
from tickrun.controller.builder.wheels import LogFn, run_logged
from tickrun.controller.platforms.base import (
    AdoptResult,
    Launched,
    LaunchSpec,
    Liveness,
    Platform,
    ReplicaRef,
)
from tickrun.controller.settings import Settings
from tickrun.controller.store import Store
from tickrun.functions.spec import FunctionSpec

AUTH = {"Authorization": "Bearer sekret"}
Client = TestClient[web.Request, web.Application]


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        token="sekret",
        container_engine="podman",
        function_ports=False,
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(_settings(tmp_path)))) as c:
        yield c


def _code(tmp_path: Path) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "main.py").write_text("def handler(context, event):\n    return 'hi'\n")
    return base64.b64encode(pack_dir(src)).decode()


async def _deploy(client: Client, tmp_path: Path, name: str) -> dict[str, Any]:
    spec = {"metadata": {"name": name}, "spec": {"replicas": 0}}
    resp = await client.post(
        "/api/functions", headers=AUTH, json={"spec": spec, "code": _code(tmp_path)}
    )
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _until(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_delete_during_a_build_aborts_it_kills_its_subprocess_and_ends_followers(
    client: Client, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleep.pid"

    def slow_build(
        spec: FunctionSpec, code_dir: Path, platform: str, log: LogFn, *, code_hash: str
    ) -> BuildResult:
        # A grandchild holds the output pipe: killing only the direct child would not end it.
        script = f"echo started; sleep 30 & echo $! > {pid_file}; wait"
        run_logged(["/bin/sh", "-c", script], log, timeout_s=120, what="slow build")
        raise AssertionError("the build should have been stopped")

    app = client.app
    assert app is not None
    service = app[api.SERVICE]
    service.builder.build = slow_build  # type: ignore[method-assign]
    body = await _deploy(client, tmp_path, "slow")
    build_id = body["build"]["id"]

    async def started() -> bool:
        resp = await client.get(f"/api/builds/{build_id}/log", headers=AUTH)
        return "started" in await resp.text() and pid_file.exists()

    await _until(started, 10, "the build command to start")
    follow = await client.get(f"/api/builds/{build_id}/log?follow=1", headers=AUTH)
    follower = asyncio.ensure_future(follow.text())
    await asyncio.sleep(0.2)  # the follower has read what there is
    sleep_pid = int(pid_file.read_text())
    t0 = time.monotonic()
    assert (await client.delete("/api/functions/slow", headers=AUTH)).status == 200
    assert time.monotonic() - t0 < 10
    text = await asyncio.wait_for(follower, 5)  # the follower ends: `tickrun deploy` returns
    assert "started" in text and "build aborted: function deleted" in text, text
    await _until(lambda: asyncio.sleep(0, _pid_gone(sleep_pid)), 5, "the build's subprocess")
    events = await (await client.get("/api/functions/slow/events", headers=AUTH)).json()
    aborted = [e for e in events["events"] if e["kind"] == "build_aborted"]
    assert aborted and "function deleted" in aborted[0]["message"]
    assert (await client.get(f"/api/builds/{build_id}", headers=AUTH)).status == 404
    assert not service._running  # no build task left behind


async def test_a_recreated_function_starts_with_clean_builds_and_logs(
    client: Client, tmp_path: Path
) -> None:
    state = tmp_path / "state"

    async def ready() -> bool:
        fn = await (await client.get("/api/functions/again", headers=AUTH)).json()
        return bool(fn["state"] == "ready")

    first = await _deploy(client, tmp_path, "again")
    await _until(ready, 10, "first deploy")
    (state / "logs" / "again").mkdir(parents=True, exist_ok=True)
    (state / "logs" / "again" / "r1.log").write_text("old replica output\n")
    assert (state / "builds" / "again").is_dir()
    assert (await client.delete("/api/functions/again", headers=AUTH)).status == 200
    for sub in ("builds", "logs", "code"):
        assert not (state / sub / "again").exists(), f"{sub}/again outlived the function"
    assert (await client.get(f"/api/builds/{first['build']['id']}", headers=AUTH)).status == 404

    second = await _deploy(client, tmp_path, "again")
    await _until(ready, 10, "second deploy")
    log = await (await client.get(f"/api/builds/{second['build']['id']}/log", headers=AUTH)).text()
    assert log.count("environment:") == 1, log  # not the previous function's log as well
    builds = await (await client.get("/api/functions/again/builds", headers=AUTH)).json()
    assert [b["id"] for b in builds["builds"]] == [second["build"]["id"]]


class AdoptingPlatform(Platform):
    """Every recorded replica is still alive (a controller was kill -9'd); records stops."""

    name = "process"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def start(self, launch: LaunchSpec) -> Launched:
        raise AssertionError("nothing should start")

    async def inspect(self, refs: Sequence[ReplicaRef]) -> dict[str, Liveness]:
        return {r.id: Liveness(r.id not in self.stopped) for r in refs}

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        self.stopped.append(ref.id)

    async def adopt(self, refs: Sequence[ReplicaRef], controller_id: str) -> AdoptResult:
        return AdoptResult(alive={r.id for r in refs})

    async def logs(self, ref: ReplicaRef, tail: int) -> list[str]:
        return []

    async def close(self) -> None:
        return None


async def test_a_delete_interrupted_by_a_controller_crash_is_finished_on_start(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    # The state a kill -9 in the middle of a delete leaves behind.
    store = Store(settings.database_url)
    store.open()
    store.save_function(function_row("halfgone", version=2, state="deleting"))
    store.save_replica(replica_row("r1", "halfgone", pid=os.getpid()))
    store.close()
    (settings.code_dir / "halfgone" / "c").mkdir(parents=True)
    app = create_app(settings)
    platform = AdoptingPlatform()
    app[api.SERVICE].platforms["process"] = platform
    async with TestClient(TestServer(app)) as c:
        assert platform.stopped == ["r1"]  # the adopted replica was stopped at start
        assert (await c.get("/api/functions/halfgone", headers=AUTH)).status == 404
        assert not (settings.code_dir / "halfgone").exists()
        # …so the name can be deployed again (it used to be 409 forever)
        await _deploy(c, tmp_path, "halfgone")
