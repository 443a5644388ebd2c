"""A running run's log, live: published while the run executes (runlog.LivePublisher), bounded
and redacted as the final one, the final one always last; readable over GET /api/runs/{uid}/log
with ``X-Tickrun-Log: live|final``; left behind by a job process killed with SIGKILL, for the
run itself and for a sweep's iterations run by worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from tickrun.functions.launch import python_command
from tickrun.functions.runs import RunState, SqlRunDB, TrackingSettings, run_function, runlog
from tickrun.functions.runs.api import add_routes
from tickrun.functions.runs.job import main as job_main
from tickrun.functions.runs.plugins import JobRequest
from tickrun.functions.runs.records import ArtifactKind, ArtifactRecord, RunRecord
from tickrun.functions.runs.runlog import LivePublisher, RunLog

SECRET = "l1ve-s3cr3t-value"
HERE = os.path.abspath(__file__)
WAIT_S = 60.0  # an upper bound for waits on other threads/processes, never a timing assert

# The handlers below wait for the test to let them go (in this process).
release = threading.Event()


def _wait_for(what: str, fn: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _log_record(db: SqlRunDB, uid: str, iteration: int = 0) -> ArtifactRecord | None:
    arts = db.list_artifacts(None, uid=uid, iteration=iteration, kind="log")
    return max(arts, key=lambda a: a.created_at) if arts else None


def _log_text(db: SqlRunDB, uid: str, iteration: int = 0) -> str:
    rec = _log_record(db, uid, iteration)
    return "" if rec is None else Path(rec.target).read_text()


def publisher_threads() -> int:
    return sum(t.name.startswith("run-log-") and t.is_alive() for t in threading.enumerate())


# -- handlers ---------------------------------------------------------------------------------


def logs_then_waits(context: Any, n: int = 3) -> dict[str, int]:
    for i in range(n):
        context.logger.info(f"before {i} with {SECRET}")
    if not release.wait(WAIT_S):
        raise RuntimeError("the test never released the handler")
    context.logger.info("after the release")
    return {"n": n}


def counts_threads_silently(context: Any) -> dict[str, int]:
    return {"threads": publisher_threads()}


def counts_threads_after_a_line(context: Any) -> dict[str, int]:
    context.logger.info("one line")
    return {"threads": publisher_threads()}


def floods(context: Any, n: int = 3000) -> None:
    for i in range(n):
        context.logger.info(f"flood {i}")


def hangs(context: Any, x: int = 0) -> None:
    """For a job process the test kills: a logged line, a printed one, then nothing until
    killed."""
    context.logger.info(f"hanging x={x} with {SECRET}")
    print(f"printed by x={x}", flush=True)
    time.sleep(600)


# -- the publisher ----------------------------------------------------------------------------


def test_no_thread_until_the_first_line_and_none_after_stop() -> None:
    log = RunLog()
    got: list[str] = []
    pub = LivePublisher(log, lambda lg: got.append(lg.text({})), interval_s=3600)
    assert not pub.started and publisher_threads() == 0
    pub.stop()
    log.add("after stop")
    assert not pub.started and not pub.publish_now() and got == []

    log = RunLog()
    pub = LivePublisher(log, lambda lg: got.append(lg.text({})), interval_s=3600, name="run-log-t")
    log.add("first")
    assert pub.started and publisher_threads() == 1
    assert pub.publish_now() and got == ["first\n"]
    assert not pub.publish_now()  # nothing new: nothing written
    log.add("second")
    pub.stop()
    assert publisher_threads() == 0
    assert not pub.publish_now() and got == ["first\n"]  # stopped: the caller writes the end


def test_published_text_is_bounded_and_redacted() -> None:
    log = RunLog(max_lines=3, max_chars=10_000)
    got: list[tuple[str, int, int]] = []
    pub = LivePublisher(log, lambda lg: got.append(lg.snapshot({"X_TOKEN": SECRET})))
    for i in range(10):
        log.add(f"line {i} {SECRET}")
    assert pub.publish_now()
    pub.stop()
    text, lines, dropped = got[0]
    assert (lines, dropped) == (3, 7)
    assert text.splitlines() == [
        "[tickrun: 7 earlier lines dropped; the log keeps the last 3 lines / 10000 characters]",
        *[f"line {i} [redacted]" for i in (7, 8, 9)],
    ]


def test_stop_waits_for_a_publish_under_way_so_the_final_write_is_last() -> None:
    log = RunLog()
    order: list[str] = []
    entered, go_on = threading.Event(), threading.Event()

    def slow(lg: RunLog) -> None:
        entered.set()
        go_on.wait(WAIT_S)
        order.append("live")

    pub = LivePublisher(log, slow, interval_s=3600)
    log.add("a line")
    live = threading.Thread(target=pub.publish_now)
    live.start()
    assert entered.wait(WAIT_S)
    stopper = threading.Thread(target=lambda: (pub.stop(), order.append("final")))
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # held by the publish under way
    go_on.set()
    stopper.join(WAIT_S)
    live.join(WAIT_S)
    assert order == ["live", "final"]
    log.add("more")
    assert not pub.publish_now() and order == ["live", "final"]


# -- runs -------------------------------------------------------------------------------------


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runlog, "PUBLISH_INTERVAL_S", 0.05)
    # Only the handler's records: an earlier test of the session may have enabled the stdio
    # capture of a job's process (a process-wide switch) in this one.
    monkeypatch.setattr(runlog, "_stdio", False)


def test_a_run_that_logs_nothing_starts_no_thread(settings: TrackingSettings, fast: None) -> None:
    quiet = run_function(counts_threads_silently, settings=settings, progress=False)
    assert quiet.results["threads"] == 0 and quiet.artifacts == []
    chatty = run_function(counts_threads_after_a_line, settings=settings, progress=False)
    assert chatty.results["threads"] == 1
    assert publisher_threads() == 0  # stopped at the run's end


def test_the_log_is_readable_while_the_run_runs_then_final(
    settings: TrackingSettings, db: SqlRunDB, fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_PASSWORD", SECRET)
    release.clear()
    out: list[Any] = []
    runner = threading.Thread(
        target=lambda: out.append(
            run_function(logs_then_waits, params={"n": 3}, settings=settings, db=db, progress=False)
        )
    )
    runner.start()
    try:
        rec = _wait_for("a run", lambda: db.list_runs(None, limit=1))[0]
        text = _wait_for("the live log", lambda: "before 2" in _log_text(db, rec.uid))
        live = _log_record(db, rec.uid)
        assert live is not None and live.meta["final"] is False and live.meta["lines"] == 3
        text = _log_text(db, rec.uid)
        assert SECRET not in text and "before 0 with [redacted]" in text
        assert "after the release" not in text
        assert db.get_run(rec.uid).state is RunState.RUNNING  # held by the handler
    finally:
        release.set()
        runner.join(WAIT_S)
    run = out[0]
    assert run.state == "completed"
    final = run.artifact_record("log")
    assert final.meta["final"] is True and final.meta["lines"] == 4
    stored = _log_record(db, run.uid)
    assert stored is not None and stored.meta["final"] is True
    assert _log_text(db, run.uid).rstrip().endswith("INFO after the release")


def test_the_final_log_wins_over_live_copies(
    settings: TrackingSettings, db: SqlRunDB, fast: None
) -> None:
    # Thousands of lines at a 50 ms publish interval: live copies race the end of the run.
    run = run_function(floods, params={"n": 3000}, settings=settings, db=db, progress=False)
    assert run.state == "completed"
    rec = _log_record(db, run.uid)
    assert rec is not None and rec.meta == {
        "lines": 3000,
        "dropped": 0,
        "truncated": False,
        "final": True,
    }
    lines = Path(rec.target).read_text().splitlines()
    assert len(lines) == 3000 and lines[-1].endswith("INFO flood 2999")


# -- the API ----------------------------------------------------------------------------------


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


async def _get(url: str) -> tuple[int, str | None, str]:
    async with ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.headers.get("X-Tickrun-Log"), await resp.text()


async def test_api_says_live_or_final(
    api: tuple[str, SqlRunDB], settings: TrackingSettings, fast: None
) -> None:
    url, db = api
    # Created, nothing logged yet: an empty live log, not a 404.
    created = RunRecord(uid="c" * 32, project="p", name="n", state=RunState.CREATED)
    await asyncio.to_thread(db.apply, _batch(created))
    assert await _get(f"{url}/api/runs/{created.uid}/log") == (200, "live", "")

    release.clear()
    out: list[Any] = []
    runner = threading.Thread(
        target=lambda: out.append(
            run_function(logs_then_waits, params={"n": 2}, settings=settings, db=db, progress=False)
        )
    )
    runner.start()
    try:
        uid = (await asyncio.to_thread(_wait_for, "a run", lambda: db.list_runs("default")))[0].uid

        async def live_text() -> str:
            while True:
                status, mode, text = await _get(f"{url}/api/runs/{uid}/log")
                assert status == 200 and mode == "live"
                if "before 1" in text:
                    return text
                await asyncio.sleep(0.05)

        text = await asyncio.wait_for(live_text(), WAIT_S)
        assert "before 0 with" in text and "after the release" not in text
    finally:
        release.set()
        await asyncio.to_thread(runner.join, WAIT_S)
    status, mode, text = await _get(f"{url}/api/runs/{uid}/log")
    assert (status, mode) == (200, "final") and text.rstrip().endswith("after the release")
    # Ended with nothing logged: still a 404.
    ended = created.model_copy(update={"uid": "e" * 32, "state": RunState.COMPLETED})
    await asyncio.to_thread(db.apply, _batch(ended))
    status, _, _ = await _get(f"{url}/api/runs/{ended.uid}/log")
    assert status == 404
    # ... or, asked for by a follower (the UI), an empty final log.
    assert await _get(f"{url}/api/runs/{ended.uid}/log?empty=1") == (200, "final", "")


def _batch(run: RunRecord) -> Any:
    from tickrun.functions.runs.records import RunBatch

    return RunBatch(runs=[run], artifacts=[])


# -- a killed job process ---------------------------------------------------------------------


def _start_job(request: JobRequest) -> subprocess.Popen[bytes]:
    cmd = python_command(job_main, request.model_dump_json(), on_parent_death=None)
    # A session of its own: the test kills the job and its sweep workers together.
    return subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sweep", [False, True], ids=["job", "sweep-workers"])
def test_a_killed_job_leaves_its_last_published_log(
    settings: TrackingSettings, db: SqlRunDB, monkeypatch: pytest.MonkeyPatch, sweep: bool
) -> None:
    monkeypatch.setenv("SERVICE_PASSWORD", SECRET)
    uid = ("s" if sweep else "j") * 32
    extra: dict[str, Any] = (
        {"hyperparams": {"x": [1, 2]}, "selector": "max.x", "parallel": 2} if sweep else {}
    )
    request = JobRequest(runner="subprocess", target=f"{HERE}:hangs", uid=uid, **extra)
    proc = _start_job(request)
    iterations = [1, 2] if sweep else [0]
    try:
        for it in iterations:
            x = it if sweep else 0
            # Both the logged and the printed line (stdout is captured in a job's process).
            _wait_for(
                f"iteration {it}'s live log",
                lambda it=it, x=x: f"printed by x={x}" in _log_text(db, uid, it),
                timeout_s=120,
            )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(WAIT_S)
    for it in iterations:
        rec = _log_record(db, uid, it)
        assert rec is not None and rec.kind is ArtifactKind.LOG and rec.meta["final"] is False
        text = Path(rec.target).read_text()
        x = it if sweep else 0
        assert f"INFO hanging x={x} with [redacted]" in text and SECRET not in text
        assert f"printed by x={x}" in text


class _RefusingContext:
    """A run context whose store refuses every artifact (as a full disk or a store outage)."""

    uid = "r" * 32
    artifacts: dict[str, Any] = {}

    def log_artifact(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("No space left on device")


def test_a_refusing_store_is_reported_once_not_every_publish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx, log = _RefusingContext(), RunLog()
    pub = LivePublisher(
        log,
        lambda lg: runlog.write_log(ctx, lg, final=False, warn=pub.failures == 0),
        interval_s=3600,
    )
    with caplog.at_level("DEBUG", logger=runlog.__name__):
        for i in range(3):
            log.add(f"line {i}")
            assert pub.publish_now()
        pub.stop()
        assert runlog.write_log(ctx, log) is False  # the final one: reported again
    assert pub.failures == 3
    levels = [
        r.levelname for r in caplog.records if r.getMessage() == "could not store the run's log"
    ]
    assert levels == ["WARNING", "DEBUG", "DEBUG", "WARNING"]
