"""Pipelines whose steps are real jobs: ``runner="subprocess"`` (each step a process of its
own, tracked in the run DB, independent steps at the same time), and a pipeline scheduled on a
real controller (``tickrun pipeline run … --schedule``) whose firing records its graph."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_controller_harness import (
    TOKEN,
    ControllerProc,
    tracking_controller,
    wait_for,
)
from tests.peers.postgres import PostgresServer
from tickrun import Pipeline
from tickrun.cli import main
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.runs.records import RunRecord
from tickrun.functions.runs.settings import TrackingSettings
from tickrun.hub.sampledata import market_data

pytestmark = pytest.mark.slow

STEPS = """\
import os
import time

import pandas as pd


def bars(context, market=None, rows=100):
    df = pd.read_csv(market.local()).tail(int(rows)).reset_index(drop=True)
    context.log_dataset("bars", df)
    context.log_result("pid", os.getpid())


def stats(context, bars=None, seconds=1.0):
    t0 = time.time()
    df = bars.as_df()
    time.sleep(float(seconds))
    context.log_result("t0", t0)
    context.log_result("t1", time.time())
    context.log_result("mean_close", float(df["close"].mean()))
    context.log_result("pid", os.getpid())


def report(context, a_run="", b_run="", mean=0.0):
    context.log_result("inputs", [a_run, b_run])
    context.log_result("mean", mean)
"""

DEFINITION = """\
from tickrun import Pipeline

STEPS = {steps!r}
MARKET = {market!r}

flow = Pipeline("nightly", project="{project}")
bars = flow.step("bars", STEPS + ":bars", inputs={{"market": MARKET}}, params={{"rows": 48}})
a = flow.step("stats-a", STEPS + ":stats", inputs={{"bars": bars.output("bars")}},
              params={{"seconds": {seconds}}})
b = flow.step("stats-b", STEPS + ":stats", inputs={{"bars": bars.output("bars")}},
              params={{"seconds": {seconds} + 0.1}})
flow.step("report", STEPS + ":report",
          params={{"a_run": a.result("uid"), "b_run": b.result("uid"), "mean": a.result("mean_close")}})
"""


def write_flow(folder: Path, project: str, seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    steps = folder / "steps.py"
    steps.write_text(STEPS)
    flow = folder / "flow.py"
    flow.write_text(
        DEFINITION.format(
            steps=str(steps), market=str(market_data()), project=project, seconds=seconds
        )
    )
    return flow


def load(path: Path) -> Pipeline:
    from tickrun.functions.pipelines.job import load_pipeline

    return load_pipeline(f"{path}:flow")


def test_subprocess_steps_are_real_jobs_running_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL", "TICKRUN_ARTIFACT_PATH"):
        monkeypatch.delenv(var, raising=False)
    flow = load(write_flow(tmp_path / "src", "jobs", seconds=1.0))
    run = flow.run(runner="subprocess", parallel=2)
    assert run.state == "completed", run.error
    db = SqlRunDB(f"sqlite:///{tmp_path / 'home' / 'runs.db'}")
    try:
        recs = {n: db.get_run(s.run_uid or "") for n, s in run.steps.items()}
        pids = {n: r.results["pid"] for n, r in recs.items() if "pid" in r.results}
        # Each step a process of its own, none of them this one.
        assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
        for name, rec in recs.items():
            assert rec.state.value == "completed"
            assert rec.labels["tickrun.pipeline-run"] == run.uid
            assert rec.labels["tickrun.pipeline-step"] == name
        a, b = recs["stats-a"].results, recs["stats-b"].results
        assert a["t0"] < b["t1"] and b["t0"] < a["t1"], "stats-a and stats-b did not overlap"
        assert recs["report"].params["a_run"] == run.steps["stats-a"].run_uid
        assert recs["report"].results["mean"] == a["mean_close"]
        pipeline_rec = db.get_run(run.uid)
        assert pipeline_rec.results["graph"]["nodes"][1]["run_uid"] == recs["stats-a"].uid
        # Again: every step cached, nothing launched.
        again = flow.run(runner="subprocess", parallel=2)
        assert {n: s.state for n, s in again.steps.items()} == dict.fromkeys(again.steps, "cached")
        assert len(db.list_runs("jobs", label="tickrun.pipeline-step=bars")) == 1
    finally:
        db.close()


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[ControllerProc]:
    with tracking_controller(tmp_path) as proc:
        yield proc


def firings(db: SqlRunDB, schedule: str) -> list[RunRecord]:
    return [
        r
        for r in db.list_runs("sched", label=f"tickrun.schedule={schedule}", limit=100)
        if r.state.value == "completed"
    ]


def test_a_scheduled_pipeline_fires_on_the_controller_and_records_its_graph(
    ctl: ControllerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = write_flow(tmp_path / "src", "sched", seconds=0.2)
    monkeypatch.setenv("TICKRUN_CONTROLLER_URL", ctl.url)
    monkeypatch.setenv("TICKRUN_TOKEN", TOKEN)
    with pytest.raises(SystemExit) as exit_code:
        main(["pipeline", "run", f"{flow}:flow", "--schedule", "*/2 * * * * *"])
    assert exit_code.value.code in (0, None)
    db = SqlRunDB(f"sqlite:///{ctl.state_dir / 'tickrun.db'}")
    try:
        done = wait_for(lambda: firings(db, "nightly"), 120, "a completed pipeline firing")
        ctl.client.pause_schedule("nightly")
        fired = done[-1]
        assert fired.labels["tickrun.pipeline"] == "nightly"
        assert fired.labels["tickrun.kind"] == "pipeline"
        graph = fired.results["graph"]
        assert graph["run_uid"] == fired.uid
        assert [n["name"] for n in graph["nodes"]] == ["bars", "stats-a", "stats-b", "report"]
        assert all(n["state"] in ("completed", "cached") for n in graph["nodes"])
        assert [a.key for a in db.list_artifacts("sched", uid=fired.uid)] == ["graph"]
        # Its steps are tracked runs in the controller's database, labelled with the firing.
        for node in graph["nodes"]:
            step = db.get_run(node["run_uid"])
            assert step.state.value == "completed"
            assert step.labels["tickrun.pipeline-step"] == node["name"]
            if node["state"] == "completed":
                assert step.labels["tickrun.pipeline-run"] == fired.uid
        ctl.client.delete_schedule("nightly")
    finally:
        db.close()


@pytest.mark.postgres
def test_the_cache_and_label_queries_on_a_postgresql_run_db(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    url = postgres.create_database(f"pipelines_{uuid.uuid4().hex[:12]}")
    settings = TrackingSettings.from_env().model_copy(update={"db_url": url})
    flow = load(write_flow(tmp_path / "src", "pg", seconds=0.0))
    first = flow.run(settings=settings)
    second = flow.run(settings=settings)
    assert {s.state for s in first.steps.values()} == {"completed"}
    assert {n: s.state for n, s in second.steps.items()} == dict.fromkeys(second.steps, "cached")
    db = SqlRunDB(url)
    try:
        steps = db.list_runs("pg", label=f"tickrun.pipeline-run={first.uid}")
        assert {r.uid for r in steps} == {s.run_uid for s in first.steps.values()}
        pipelines = db.list_runs("pg", label="tickrun.kind=pipeline")
        assert [r.uid for r in pipelines] == [second.uid, first.uid]
    finally:
        db.close()
