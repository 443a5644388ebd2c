"""Scheduled jobs in a real controller process: a per-second cron (6 fields, seconds first)
fires real tracked jobs (``--runner subprocess``, recorded in the controller's database with
their schedule's labels), pause stops it, run now runs it, a restart keeps it (missed firings
counted under ``missed: skip``), and the concurrency policies hold with real processes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_controller_harness import (
    ControllerProc,
    tracking_controller,
    wait_for,
)
from tickrun.functions.errors import NotFoundError
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.runs.records import RunRecord

pytestmark = pytest.mark.slow

JOB = """\
import time


def tick(context, sleep_s=0.0):
    context.log_result("started_at", time.time())
    time.sleep(sleep_s)
    context.log_result("slept", sleep_s)
"""


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[ControllerProc]:
    with tracking_controller(tmp_path) as proc:
        yield proc


@pytest.fixture
def job(tmp_path: Path) -> str:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(JOB)
    return f"{src / 'job.py'}:tick"


@pytest.fixture
def db(ctl: ControllerProc) -> Iterator[SqlRunDB]:
    # The controller's own database: scheduled jobs track there (where /api/runs reads).
    runs = SqlRunDB(f"sqlite:///{ctl.state_dir / 'tickrun.db'}")
    try:
        yield runs
    finally:
        runs.close()


def runs_of(db: SqlRunDB, schedule: str, state: str | None = None) -> list[RunRecord]:
    return [
        r
        for r in db.list_runs("default", state=state, limit=1000)
        if r.labels.get("tickrun.schedule") == schedule
    ]


def state_of(db: SqlRunDB, uid: str) -> str | None:
    try:
        return db.get_run(uid).state.value
    except NotFoundError:  # the job has not recorded it yet
        return None


def _scheduled(run: RunRecord) -> float:
    label = run.labels["tickrun.scheduled-time"]
    return dt.datetime.fromisoformat(label.replace("Z", "+00:00")).timestamp()


def test_a_per_second_schedule_fires_pauses_runs_now_and_survives_a_restart(
    ctl: ControllerProc, db: SqlRunDB, job: str
) -> None:
    client = ctl.client
    row = client.create_schedule("tick", "* * * * * *", {"target": job, "params": {"sleep_s": 0}})
    assert row["job"]["runner"] == "subprocess"
    done = wait_for(
        lambda: (rs := runs_of(db, "tick", "completed"))[1:] and rs, 120, "two completed runs"
    )
    assert len({r.labels["tickrun.scheduled-time"] for r in done}) == len(done)
    for run in done:
        assert run.labels["tickrun.schedule-trigger"] == "cron" and run.name == "tick"
        assert run.results["slept"] == 0
    assert client.get_schedule("tick")["runs"] >= 2

    # Paused: once the running run ends, nothing new starts.
    client.pause_schedule("tick")
    wait_for(lambda: not client.get_schedule("tick")["active_runs"], 60, "the last run to end")
    fired = client.get_schedule("tick")["runs"]
    count = len(runs_of(db, "tick"))
    time.sleep(3)
    assert client.get_schedule("tick")["runs"] == fired and len(runs_of(db, "tick")) == count

    # A restart keeps it, paused, with its last run settled.
    ctl.stop()
    ctl.start()
    client = ctl.client
    kept = client.get_schedule("tick")
    assert kept["paused"] is True and kept["runs"] == fired and kept["cron"] == "* * * * * *"
    assert kept["last_run_state"] == "completed"

    # Run now, paused or not.
    uid = client.run_schedule("tick")
    wait_for(lambda: state_of(db, uid) == "completed", 90, "the run-now run")
    assert db.get_run(uid).labels["tickrun.schedule-trigger"] == "manual"

    # Resumed it fires again; a restart while it is active misses the downtime's firings.
    client.resume_schedule("tick")
    wait_for(lambda: client.get_schedule("tick")["runs"] >= fired + 2, 60, "firing again")
    ctl.stop()
    time.sleep(4)  # down for 4+ s: at least 3 per-second firings missed
    ctl.start()
    client = ctl.client
    after = wait_for(
        lambda: (s := client.get_schedule("tick"))["missed_firings"] >= 2 and s, 30, "missed"
    )
    assert after["missed"] == "skip"
    before = after["runs"]
    wait_for(lambda: client.get_schedule("tick")["runs"] > before, 60, "firing after restart")
    client.delete_schedule("tick")


def test_replace_aborts_the_running_job_and_forbid_skips(
    ctl: ControllerProc, db: SqlRunDB, job: str
) -> None:
    client = ctl.client
    slow = {"target": job, "params": {"sleep_s": 60}}
    client.create_schedule("replaced", "*/5 * * * * *", slow, concurrency="replace")
    client.create_schedule("forbidden", "* * * * * *", slow, concurrency="forbid")
    replaced = wait_for(
        lambda: [r for r in runs_of(db, "replaced") if r.state.value == "aborted"],
        90,
        "a replaced run",
    )
    # The aborted one was replaced by a newer firing of the same schedule.
    aborted = {r.uid for r in replaced}
    newest = wait_for(
        lambda: (s := client.get_schedule("replaced"))["last_run_uid"] not in aborted and s,
        30,
        "the replacing run",
    )
    assert newest["last_fired_at"] > min(_scheduled(r) for r in replaced)
    [only] = wait_for(lambda: runs_of(db, "forbidden"), 60, "the forbidden schedule's run")
    forbidden = wait_for(
        lambda: (s := client.get_schedule("forbidden"))["skipped"] >= 3 and s, 60, "skips"
    )
    assert [r.uid for r in runs_of(db, "forbidden")] == [only.uid]
    assert forbidden["runs"] == 1 and forbidden["active_runs"] == [only.uid]
    assert forbidden["last_skip_reason"] == f"forbid: run {only.uid} still running"
    # Stopping the controller drains: the running jobs end aborted, none is left running.
    ctl.stop()
    assert [r.uid for r in db.list_runs("default", state="running", limit=100)] == []
    assert db.get_run(only.uid).state.value == "aborted"
