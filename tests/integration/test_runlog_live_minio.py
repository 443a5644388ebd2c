"""A running run's log, live, when the run's artifacts live in a real MinIO server: published to
the bucket while the run is held running, read back over GET /api/runs/{uid}/log as ``live``,
then the final log (``final``) once the run ends."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from tests.integration.test_runs_minio import raw_reader, settings_for
from tests.peers import MinioServer
from tickrun.functions.runs import RunState, SqlRunDB, run_function, runlog
from tickrun.functions.runs.api import S3_KEY, add_routes

pytestmark = pytest.mark.minio

SECRET = "m1n10-l1ve-s3cr3t"
WAIT_S = 60.0
release = threading.Event()


def logs_then_waits(context: Any) -> None:
    for i in range(3):
        context.logger.info(f"line {i} with {SECRET}")
    if not release.wait(WAIT_S):
        raise RuntimeError("the test never released the handler")
    context.logger.info("after the release")


def _wait_for(what: str, fn: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_live_log_on_minio_over_the_api(
    minio_server: MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runlog, "PUBLISH_INTERVAL_S", 0.1)
    monkeypatch.setenv("BROKER_TOKEN", SECRET)
    s = settings_for(minio_server, tmp_path)
    db = SqlRunDB(s.db_url)
    app = web.Application()
    add_routes(app, db, roots=s.artifact_roots())
    app[S3_KEY] = s.s3  # the API reads the logs from this MinIO
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    url = str(srv.make_url("")).rstrip("/")
    read = raw_reader(minio_server)
    uid = uuid.uuid4().hex
    release.clear()
    runner = threading.Thread(
        target=run_function,
        args=(logs_then_waits,),
        kwargs={"project": "minio", "settings": s, "db": db, "uid": uid, "progress": False},
    )
    runner.start()

    async def get() -> tuple[int, str | None, str]:
        async with ClientSession() as http, http.get(f"{url}/api/runs/{uid}/log") as resp:
            return resp.status, resp.headers.get("X-Tickrun-Log"), await resp.text()

    try:

        def live_record() -> Any:
            arts = db.list_artifacts("minio", uid=uid, kind="log")
            return arts[0] if arts and b"line 2" in read(arts[0].target) else None

        rec = await asyncio.to_thread(_wait_for, "the live log in MinIO", live_record)
        assert rec.target.startswith(s.artifact_path + "/minio/") and rec.meta["final"] is False
        status, mode, text = await get()
        assert (status, mode) == (200, "live")
        assert "line 0 with [redacted]" in text and SECRET not in text
        assert "after the release" not in text
        assert db.get_run(uid).state is RunState.RUNNING  # held by the handler
    finally:
        release.set()
        await asyncio.to_thread(runner.join, WAIT_S)
    try:
        assert db.get_run(uid).state is RunState.COMPLETED
        status, mode, text = await get()
        assert (status, mode) == (200, "final")
        assert text.rstrip().endswith("INFO after the release")
        final = db.list_artifacts("minio", uid=uid, kind="log")
        assert len(final) == 1 and final[0].meta["final"] is True
        assert read(final[0].target).decode() == text
    finally:
        await srv.close()
        db.close()
