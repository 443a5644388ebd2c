from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tickrun.functions.errors import NotFoundError
from tickrun.functions.runs import (
    ArtifactRecord,
    RunBatch,
    RunRecord,
    RunState,
    SqlRunDB,
    TrackingSettings,
)
from tickrun.functions.runs.db.base import HOST as THIS_HOST
from tickrun.functions.runs.db.base import merge_incoming, pid_alive

from .jobs_for_tests import PATH


def rec(uid: str = "u1", it: int = 0, **kw: object) -> RunRecord:
    return RunRecord(uid=uid, iteration=it, project=str(kw.pop("project", "p")), **kw)  # type: ignore[arg-type]


def test_apply_get_list(db: SqlRunDB) -> None:
    db.apply(
        RunBatch(
            runs=[
                rec("a", state=RunState.RUNNING, pid=os.getpid(), host=THIS_HOST),
                rec("a", 1),
                rec("b", project="q"),
            ]
        )
    )
    db.apply(RunBatch(runs=[rec("a", state=RunState.COMPLETED, results={"x": 1})]))
    assert db.get_run("a").results == {"x": 1}
    assert db.get_run("a", 1).iteration == 1
    assert {r.uid for r in db.list_runs()} == {"a", "b"}
    assert [r.uid for r in db.list_runs("q")] == ["b"]
    assert [r.iteration for r in db.list_runs(uid="a")] == [0, 1]
    assert len(db.list_runs(iterations=True)) == 3
    assert [r.uid for r in db.list_runs(state="completed")] == ["a"]
    with pytest.raises(NotFoundError):
        db.get_run("zzz")


def test_tables_created_idempotently(settings: TrackingSettings) -> None:
    for _ in range(2):
        d = SqlRunDB(settings.db_url)
        d.apply(RunBatch(runs=[rec("same")]))
        assert d.get_run("same").uid == "same"
        d.close()


def test_sqlite_uses_wal(db: SqlRunDB) -> None:
    db.apply(RunBatch(runs=[rec()]))
    with db.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"


def test_artifact_records_upsert(db: SqlRunDB) -> None:
    a = ArtifactRecord(project="p", uid="u", key="m", target="/x/m.bin", size_bytes=1)
    db.apply(RunBatch(artifacts=[a]))
    db.apply(RunBatch(artifacts=[a.model_copy(update={"size_bytes": 2})]))
    found = db.list_artifacts("p", uid="u")
    assert len(found) == 1 and found[0].size_bytes == 2
    assert db.get_artifact("p", "u", 0, "m").target == "/x/m.bin"
    with pytest.raises(NotFoundError):
        db.get_artifact("p", "u", 1, "m")


def test_late_write_cannot_revive_a_terminal_run() -> None:
    old = rec(state=RunState.ABORTED, error="died")
    late = rec(state=RunState.RUNNING, results={"x": 2})
    merged = merge_incoming(old, late)
    assert merged.state is RunState.ABORTED and merged.error == "died"
    assert merged.results == {"x": 2}
    assert merge_incoming(old, rec(state=RunState.COMPLETED)).state is RunState.COMPLETED


def test_late_write_through_the_db_keeps_the_terminal_state(db: SqlRunDB) -> None:
    db.apply(RunBatch(runs=[rec("t", state=RunState.RUNNING), rec("live")]))
    db.apply(RunBatch(runs=[rec("t", state=RunState.ABORTED, error="killed")]))
    late = [rec("t", state=RunState.RUNNING, results={"x": 2}), rec("live", results={"y": 1})]
    db.apply(RunBatch(runs=late))
    t = db.get_run("t")
    assert (t.state, t.error, t.results) == (RunState.ABORTED, "killed", {"x": 2})
    assert [r.uid for r in db.list_runs(state="aborted")] == ["t"], "state column agrees"
    assert db.get_run("live").results == {"y": 1}


def test_dead_pid_marked_aborted_on_read(db: SqlRunDB) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    db.apply(
        RunBatch(
            runs=[
                rec(
                    "dead",
                    state=RunState.RUNNING,
                    pid=proc.pid,
                    host=THIS_HOST,
                    heartbeat_at=time.time(),
                )
            ]
        )
    )
    assert db.mark_stale() == []  # alive: left alone
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not pid_alive(proc.pid)
    marked = db.mark_stale()
    assert [m.uid for m in marked] == ["dead"]
    got = db.get_run("dead")
    assert got.state is RunState.ABORTED
    assert got.error is not None and f"process {proc.pid}" in got.error


def test_silent_heartbeat_marked_aborted(settings: TrackingSettings) -> None:
    db = SqlRunDB(settings.db_url, stale_after_s=30)
    now = time.time()
    db.apply(
        RunBatch(
            runs=[
                rec(
                    "remote",
                    state=RunState.RUNNING,
                    pid=1,
                    host="other-host",
                    heartbeat_at=now - 120,
                ),
                rec("fresh", state=RunState.RUNNING, pid=1, host="other-host", heartbeat_at=now),
            ]
        )
    )
    marked = db.mark_stale(now)
    assert [m.uid for m in marked] == ["remote"]
    assert "no heartbeat" in (db.get_run("remote").error or "")
    assert db.get_run("fresh").state is RunState.RUNNING


def test_kill_9_during_a_run_is_marked_on_next_read(home: Path, tmp_path: Path) -> None:
    """A real `tickrun run` process killed with SIGKILL mid-run: the next reader marks it."""
    marker = tmp_path / "started"
    env = {**os.environ, "TICKRUN_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tickrun",
            "run",
            f"{PATH}:sleeps",
            "--param",
            "seconds=120",
            "--param",
            f"marker={marker}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the job process exited early"
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        uid = marker.read_text()
        db = SqlRunDB(TrackingSettings.from_env(env).db_url)
        assert db.get_run(uid).state is RunState.RUNNING
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        run = SqlRunDB(TrackingSettings.from_env(env).db_url).get_run(uid)
        assert run.state is RunState.ABORTED
        assert "died" in (run.error or "")
        assert run.results.get("started") is True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_final_write_retries_a_transient_db_failure(settings: TrackingSettings) -> None:
    from tickrun.functions.errors import StoreError
    from tickrun.functions.runs import run_function

    class Flaky(SqlRunDB):
        fail_next = 0

        def apply(self, batch: RunBatch) -> None:
            if any(r.state is RunState.COMPLETED for r in batch.runs) and Flaky.fail_next:
                Flaky.fail_next -= 1
                raise StoreError("database is locked")
            super().apply(batch)

    db = Flaky(settings.db_url)
    Flaky.fail_next = 1

    def job(context: object) -> None:
        return None

    run = run_function(job, settings=settings, db=db)
    assert run.state == "completed"
    assert db.get_run(run.uid).state is RunState.COMPLETED
    assert Flaky.fail_next == 0
