"""The SQL run DB: its contract (tests/support/rundb_contract.py) on SQLite, and what only
SQLite or a real `tickrun run` process shows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.rundb_contract import CHECKS, Check, rec
from tickrun.functions.runs import RunBatch, RunState, SqlRunDB, TrackingSettings
from tickrun.functions.runs.db.base import merge_incoming

from .jobs_for_tests import PATH


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_run_db_contract_on_sqlite(check: Check, tmp_path: Path) -> None:
    """tests/integration/test_rundb_postgres.py runs the same checks on PostgreSQL."""
    check(f"sqlite:///{tmp_path / 'runs.db'}")


def test_sqlite_uses_wal(db: SqlRunDB) -> None:
    db.apply(RunBatch(runs=[rec()]))
    with db.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"


def test_late_write_cannot_revive_a_terminal_run() -> None:
    old = rec(state=RunState.ABORTED, error="died")
    late = rec(state=RunState.RUNNING, results={"x": 2})
    merged = merge_incoming(old, late)
    assert merged.state is RunState.ABORTED and merged.error == "died"
    assert merged.results == {"x": 2}
    assert merge_incoming(old, rec(state=RunState.COMPLETED)).state is RunState.COMPLETED


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
