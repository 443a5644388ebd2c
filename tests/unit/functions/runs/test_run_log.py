"""A run's own log: context.logger's records (and a job process's prints) kept with the run as
its ``log`` artifact, bounded, secrets redacted, a failure's traceback; GET /api/runs/{uid}/log."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from tickrun.functions.runs import SqlRunDB, TrackingSettings, run_function, runlog
from tickrun.functions.runs.api import add_routes
from tickrun.functions.runs.records import ArtifactKind
from tickrun.functions.runs.runlog import RunLog, capture_stdio, redact

SECRET = "s3cr3t-v4lue-for-tests"


def chatty(context: Any, n: int = 3) -> dict[str, int]:
    for i in range(n):
        context.logger.info("step %d of %d", i + 1, n)
    context.logger.info_with("fitted", rows=120, model="ridge")
    context.logger.debug("a debug line nobody asked for")
    return {"n": n}


def silent(context: Any) -> None:
    return None


def failing(context: Any) -> None:
    context.logger.warn("about to divide")
    _ = 1 / 0


def leaky(context: Any) -> None:
    context.logger.info(f"connecting with {SECRET}")


def swept(context: Any, c: float = 1.0) -> dict[str, float]:
    context.logger.info(f"trying c={c}")
    return {"score": -abs(c - 0.1)}


def log_of(record: Any, db: SqlRunDB) -> str:
    arts = db.list_artifacts(record.project, uid=record.uid, iteration=record.iteration)
    logs = [a for a in arts if a.kind is ArtifactKind.LOG]
    assert len(logs) == 1
    return Path(logs[0].target).read_text()


def test_bounded_by_lines_and_characters_and_says_so() -> None:
    log = RunLog(max_lines=5, max_chars=10_000)
    for i in range(12):
        log.add(f"line {i}")
    text = log.text({})
    lines = text.splitlines()
    assert log.dropped == 7 and len(log) == 5
    assert lines[0].startswith("[tickrun: 7 earlier lines dropped")
    assert lines[1:] == [f"line {i}" for i in range(7, 12)]
    by_chars = RunLog(max_lines=1000, max_chars=100)
    for i in range(50):
        by_chars.add(f"{i:09d}")  # 10 characters a line with its newline
    assert len(by_chars) == 10 and by_chars.dropped == 40
    assert by_chars.text({}).splitlines()[-1] == f"{49:09d}"


def test_redacts_values_of_secret_variables_only() -> None:
    env = {"MY_API_TOKEN": "tok-123456", "AWS_SECRET_ACCESS_KEY": "abcdefgh", "HOME": "/home/q"}
    out = redact("token tok-123456 key abcdefgh home /home/q", env)
    assert out == "token [redacted] key [redacted] home /home/q"


def test_a_handlers_log_records_are_kept_with_the_run(settings: TrackingSettings) -> None:
    run = run_function(chatty, params={"n": 3}, settings=settings, progress=False)
    assert run.state == "completed"
    rec = run.artifact_record("log")
    assert rec.kind is ArtifactKind.LOG and rec.meta["lines"] == 4 and not rec.meta["truncated"]
    lines = Path(rec.target).read_text().splitlines()
    assert [ln.split(" ", 3)[2:] for ln in lines[:3]] == [
        ["INFO", f"step {i} of 3"] for i in (1, 2, 3)
    ]
    assert lines[3].endswith('INFO fitted {"rows": 120, "model": "ridge"}')
    assert not any("debug line" in ln for ln in lines)


def test_a_run_that_logs_nothing_stores_no_log(settings: TrackingSettings) -> None:
    run = run_function(silent, settings=settings, progress=False)
    assert run.state == "completed"
    assert [a.key for a in run.artifacts] == []


def test_a_failure_keeps_its_traceback_in_the_log_not_in_the_record(
    settings: TrackingSettings,
) -> None:
    run = run_function(failing, settings=settings, progress=False)
    assert run.state == "error"
    assert run.error == "ZeroDivisionError: division by zero"
    text = Path(run.artifact_record("log").target).read_text()
    assert "WARN about to divide" in text
    assert "run failed: ZeroDivisionError: division by zero" in text
    assert "Traceback (most recent call last)" in text and "_ = 1 / 0" in text


def test_secret_values_never_reach_the_stored_log(
    settings: TrackingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_PASSWORD", SECRET)
    run = run_function(leaky, settings=settings, progress=False)
    text = Path(run.artifact_record("log").target).read_text()
    assert SECRET not in text and "connecting with [redacted]" in text


def test_each_iteration_has_its_log_and_the_sweep_shows_the_best(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    grid = [0.01, 0.1, 1.0]
    run = run_function(
        swept,
        hyperparams={"c": grid},
        selector="max.score",
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed"
    for child in run.iterations:
        c = child.params["c"]
        assert log_of(child, db).splitlines()[0].endswith(f"INFO trying c={c}")
    best = run.record.best_iteration
    parent = run.artifact_record("log")
    assert parent.meta["from_iteration"] == best == 2
    assert Path(parent.target).read_text().rstrip().endswith("trying c=0.1")


def test_stdio_is_captured_only_where_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    log = RunLog()
    with capture_stdio(log):
        print("not captured here")
    assert not log and out.getvalue() == "not captured here\n"
    monkeypatch.setattr(runlog, "_stdio", True)
    with capture_stdio(log):
        print("one", flush=True)
        sys.stdout.write("two ")
        sys.stdout.write("halves\nthree")
    assert sys.stdout is out
    assert log.text({}).splitlines() == ["one", "two halves", "three"]
    assert out.getvalue().endswith("one\ntwo halves\nthree")


@pytest.fixture
async def api(tmp_path: Path, home: Path) -> AsyncIterator[tuple[str, SqlRunDB]]:
    db = SqlRunDB(f"sqlite:///{tmp_path / 'server.db'}")
    app = web.Application()
    add_routes(app, db)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), db
    finally:
        await srv.close()
        db.close()


async def test_the_log_over_the_api(api: tuple[str, SqlRunDB], settings: TrackingSettings) -> None:
    url, db = api
    run = await asyncio.to_thread(
        run_function, chatty, params={"n": 2}, settings=settings, db=db, progress=False
    )
    quiet = await asyncio.to_thread(run_function, silent, settings=settings, db=db, progress=False)
    stored = await asyncio.to_thread(Path(run.artifact_record("log").target).read_text)
    async with ClientSession() as http:
        async with http.get(f"{url}/api/runs/{run.uid}/log") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert await resp.text() == stored
        async with http.get(f"{url}/api/runs/{run.uid}/log?download=1") as resp:
            assert f'filename="{run.uid}.log"' in resp.headers["Content-Disposition"]
        async with http.get(f"{url}/api/runs/{quiet.uid}/log") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "NotFoundError"
        async with http.get(f"{url}/api/runs/{run.uid}/log?iteration=3") as resp:
            assert resp.status == 404  # no such iteration
        async with http.get(f"{url}/api/runs/{run.uid}/log?iteration=-1") as resp:
            assert resp.status == 400
