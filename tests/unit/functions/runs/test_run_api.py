"""The runs REST API in-process over real loopback HTTP, driven by the HTTP run DB client."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tickrun.functions.errors import AuthError, BadRequestError, NotFoundError
from tickrun.functions.runs import (
    HttpRunDB,
    RunState,
    SqlRunDB,
    TrackingSettings,
    load_model,
    run_function,
)
from tickrun.functions.runs.api import add_routes

from .jobs_for_tests import check_every_kind, ref

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
async def server(tmp_path: Path, home: Path) -> AsyncIterator[tuple[str, SqlRunDB]]:
    # After `home`: the API takes its artifact stores from the environment when mounted.
    db = SqlRunDB(f"sqlite:///{tmp_path / 'server.db'}")
    app = web.Application(middlewares=[bearer])
    add_routes(app, db)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), db
    finally:
        await srv.close()
        db.close()


async def test_runs_tracked_through_the_api(
    server: tuple[str, SqlRunDB], settings: TrackingSettings
) -> None:
    url, server_db = server
    client = HttpRunDB(url, TOKEN)
    run = await asyncio.to_thread(
        run_function, ref("every_kind"), project="api", settings=settings, db=client
    )
    await asyncio.to_thread(check_every_kind, run)
    # Stored server-side, readable through the client.
    assert server_db.get_run(run.uid).state is RunState.COMPLETED
    got = await asyncio.to_thread(client.get_run, run.uid)
    assert got.results == run.results
    listed = await asyncio.to_thread(client.list_runs, "api")
    assert [r.uid for r in listed] == [run.uid]
    arts = await asyncio.to_thread(client.list_artifacts, "api", uid=run.uid, kind="model")
    assert {a.key for a in arts} == {"sk_model", "xgb_model", "xgb_booster"}
    model, info = await asyncio.to_thread(load_model, run.outputs["xgb_model"], db=client)
    assert info.framework == "xgboost"


async def test_sweep_with_worker_processes_reports_to_the_api(
    server: tuple[str, SqlRunDB], settings: TrackingSettings
) -> None:
    url, server_db = server
    run = await asyncio.to_thread(
        run_function,
        ref("sweep"),
        hyperparams={"x": [1.0, 2.0, 3.0]},
        selector="max.score",
        parallel=2,
        settings=settings,
        db=HttpRunDB(url, TOKEN),
        progress=False,
    )
    assert run.state == "completed", run.error
    its = server_db.list_runs(uid=run.uid)
    assert sorted(r.iteration for r in its) == [0, 1, 2, 3]
    assert all(r.state is RunState.COMPLETED for r in its)


def _get(url: str, token: str | None = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_rest_shapes_and_errors(
    server: tuple[str, SqlRunDB], settings: TrackingSettings
) -> None:
    url, _ = server
    client = HttpRunDB(url, TOKEN)
    run = await asyncio.to_thread(
        run_function,
        ref("sweep"),
        hyperparams={"x": [1.0, 2.0]},
        settings=settings,
        db=client,
        progress=False,
    )
    status, body = await asyncio.to_thread(_get, f"{url}/api/runs/{run.uid}")
    assert status == 200
    assert body["run"]["uid"] == run.uid and len(body["iterations"]) == 2
    status, body = await asyncio.to_thread(_get, f"{url}/api/runs?project=default&limit=5")
    assert status == 200 and [r["uid"] for r in body["runs"]] == [run.uid]
    status, body = await asyncio.to_thread(_get, f"{url}/api/artifacts/default/{run.uid}/1/note")
    assert status == 200 and body["artifact"]["kind"] == "file"
    status, body = await asyncio.to_thread(_get, f"{url}/api/runs/nope")
    assert status == 404 and body["error"] == "NotFoundError"
    status, body = await asyncio.to_thread(_get, f"{url}/api/runs?limit=abc")
    assert status == 400
    with pytest.raises(NotFoundError):
        await asyncio.to_thread(client.get_run, "nope")
    with pytest.raises(BadRequestError) as exc:
        await asyncio.to_thread(client._request, "POST", "/api/runs", b'{"runs": [{"x": 1}]}')
    assert "invalid run batch" in exc.value.message
    with pytest.raises(AuthError) as aexc:
        await asyncio.to_thread(HttpRunDB(url, "wrong-token").list_runs)
    assert "wrong-token" not in str(aexc.value)


async def test_dead_run_marked_aborted_when_read_through_the_api(
    server: tuple[str, SqlRunDB],
) -> None:
    import sys

    from tickrun.functions.runs import RunBatch, RunRecord
    from tickrun.functions.runs.db.base import HOST

    url, _ = server
    client = HttpRunDB(url, TOKEN)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    rec = RunRecord(uid="gone", state=RunState.RUNNING, pid=proc.pid, host=HOST)
    await asyncio.to_thread(client.apply, RunBatch(runs=[rec]))
    got = await asyncio.to_thread(client.get_run, "gone")
    assert got.state is RunState.ABORTED
    assert "died" in (got.error or "")
    # A late write from the dead run's process cannot revive it.
    await asyncio.to_thread(client.apply, RunBatch(runs=[rec]))
    assert (await asyncio.to_thread(client.get_run, "gone")).state is RunState.ABORTED
