"""The MLRun walk-through (functions/examples/btc_walkthrough/pipeline.py) end to end against a
real controller on the process platform, on the shipped hourly BTCUSDT bars.

``TICKRUN_CONTROLLER_URL`` is set, so every step's run and the model registry live in the
controller's database; the deploy step puts hub://model_server:1.3 on the controller with
``MODEL_URI=models:/btc-updown@champion`` (the controller binds the alias). Checked: every step
is a run with the pipeline's labels; the registered version's lineage (training run, its
dataset, the hub item); the champion alias; the served model answering over HTTP with
``X-Model-Version`` = the champion and the champion's predictions; the monitor's drift results.
A second run with another C grid: data and features come from the cache, a new challenger is
registered, and whatever the promotion run decided (read from its results, not assumed) is what
the registry and the server show.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup
from tickrun.functions.runs import (
    DataItem,
    SqlRunDB,
    get_model_version,
    list_model_versions,
    load_model,
)
from tickrun.functions.runs.records import RunRecord

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "functions" / "examples" / "btc_walkthrough" / "pipeline.py"
NAME, MODEL = "btc-walkthrough", "btc-updown"
STEPS = [
    "data",
    "features",
    "train",
    "best-model",
    "backtest",
    "register",
    "promote",
    "deploy",
    "score",
    "monitor",
]
# Both runs train on the same bars (cached features); the second sweeps other values of C.
FIRST_GRID, SECOND_GRID = [0.01, 0.1], [1.0, 10.0]


def _walkthrough(**kw: Any) -> Any:
    from tickrun.functions.pipelines.job import load_pipeline

    # keep_requirements=False: model_server runs on the controller's interpreter (no wheelhouse
    # build of xgboost & co. in a test).
    return load_pipeline(f"{PIPELINE}:walkthrough", {"keep_requirements": False, **kw})


@pytest.fixture
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControllerProc]:
    home = tmp_path / "home"
    env = dict(os.environ)
    for var in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(var, None)
    env["TICKRUN_HOME"] = str(home)  # the artifacts the controller copies model files from
    proc = ControllerProc(tmp_path / "state", env).start()
    # This process (the pipeline and its local steps) tracks in the controller.
    monkeypatch.setenv("TICKRUN_HOME", str(home))
    monkeypatch.setenv("TICKRUN_CONTROLLER_URL", proc.url)
    monkeypatch.setenv("TICKRUN_TOKEN", TOKEN)
    for var in ("TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield proc
    finally:
        cleanup(proc)


@pytest.fixture
def db(ctl: ControllerProc) -> Iterator[SqlRunDB]:
    # The controller's own database (what /api/runs and /api/models serve).
    runs = SqlRunDB(f"sqlite:///{ctl.state_dir / 'tickrun.db'}")
    try:
        yield runs
    finally:
        runs.close()


def _served(ctl: ControllerProc, rows: list[list[float]]) -> tuple[int, str | None, Any]:
    reply = ctl.client.invoke(
        MODEL,
        path="/",
        method="POST",
        body=json.dumps({"inputs": rows, "proba": True}).encode(),
        headers={"Content-Type": "application/json"},
        timeout_s=30,
    )
    return reply.status, reply.headers.get("x-model-version"), json.loads(reply.body)


def _check_step_runs(db: SqlRunDB, run: Any) -> dict[str, RunRecord]:
    """Every step's run is in the controller's DB, labelled with the pipeline and the step."""
    pipeline_run = db.get_run(run.uid)
    assert pipeline_run.labels["tickrun.pipeline"] == NAME
    assert pipeline_run.state.value == "completed"
    assert [n["name"] for n in pipeline_run.results["graph"]["nodes"]] == STEPS
    records = {}
    for step in STEPS:
        sr = run.steps[step]
        assert sr.run_uid, step
        rec = db.get_run(sr.run_uid)
        assert rec.state.value == "completed", (step, rec.error)
        assert rec.labels["tickrun.pipeline"] == NAME, step
        assert rec.labels["tickrun.pipeline-step"] == step
        # A cached step is the earlier pipeline run's own run, with that run's label.
        if not sr.cached:
            assert rec.labels["tickrun.pipeline-run"] == run.uid, step
        records[step] = rec
    labelled = {r.uid for r in db.list_runs(label=f"tickrun.pipeline-run={run.uid}", limit=100)}
    assert {run.steps[s].run_uid for s in STEPS if not run.steps[s].cached} <= labelled
    return records


def _check_serving(ctl: ControllerProc, run: Any, champion: int) -> None:
    """The function answers over HTTP as the champion: header and predictions."""
    feats = DataItem(run.steps["features"].outputs["features"]).as_df()
    model, info = load_model(f"models:/{MODEL}@champion")
    names = list(info.feature_names)
    rows = feats[names].iloc[-5:]
    status, version, body = _served(ctl, rows.to_numpy(dtype=float).tolist())
    assert status == 200, body
    assert version == f"{MODEL}/{champion}"
    want = model.predict_proba(rows)[:, 1]
    got = [p[-1] for p in body["probabilities"]]
    assert got == pytest.approx(want.tolist(), abs=1e-9)


def _timings(run: Any) -> str:
    """Each step's wall time (for the log: no timing is asserted)."""
    parts = [
        f"{n}={(s.ended_at or 0) - (s.started_at or 0):.1f}s{'(cached)' if s.cached else ''}"
        for n, s in run.steps.items()
    ]
    return " ".join(parts)


def test_walkthrough_end_to_end_on_the_process_platform_then_again(
    ctl: ControllerProc, db: SqlRunDB
) -> None:
    first = _walkthrough(c_grid=FIRST_GRID).run()
    print(f"first run: {_timings(first)}", file=sys.stderr)
    assert first.state == "completed", first.error
    recs = _check_step_runs(db, first)
    assert not any(first.steps[s].cached for s in STEPS)

    # Registered: the sweep's winning iteration, lineage = that training run, its dataset,
    # the hub item; the first challenger became champion (nothing to compare with).
    reg, best = first.steps["register"].results, first.steps["best-model"].results
    assert (reg["version"], reg["action"]) == (1, "registered")
    mv = get_model_version(MODEL, "champion")
    assert mv.version == 1 and "challenger" in mv.aliases
    assert mv.model_uri == best["model_uri"]
    assert mv.lineage.run_uid == first.steps["train"].run_uid
    assert mv.lineage.run_iteration == best["best_iteration"] > 0
    assert [(d.name, d.uri) for d in mv.lineage.datasets] == [
        ("dataset", first.steps["features"].outputs["features"])
    ]
    assert mv.lineage.datasets[0].kind == "dataset" and mv.lineage.datasets[0].sha256
    assert (mv.lineage.hub_item, mv.lineage.hub_version) == ("auto_trainer", "1.1.0")
    assert mv.lineage.params["CLASS_C"] in FIRST_GRID
    assert mv.lineage.code_hash  # the training run's code.hash label
    assert mv.lineage.labels["tickrun.pipeline-step"] == "train"
    assert json.loads(mv.tags["backtest.net_return"]) == pytest.approx(
        recs["backtest"].results["net_return"]
    )
    promote = recs["promote"].results
    assert promote["promoted"] is True and promote["champion_version"] is None
    assert promote["new_champion_version"] == 1

    # Costs and controls are in the backtest, beside the strategy's figures.
    bt = recs["backtest"].results
    assert bt["wf_folds"] == 5 and bt["cost_per_side_bp"] == 10.0
    assert bt["gross_return"] - bt["net_return"] == pytest.approx(bt["fee_drag"])
    assert {"bh_cumulative_return", "null_p_value", "shuffled_net_return", "oos_auc"} <= set(bt)

    # Deployed by alias through the controller; serving the champion.
    dep = recs["deploy"].results
    assert dep["action"] == "deployed" and dep["model_uri"] == f"models:/{MODEL}@champion"
    assert dep["served_version"] == f"{MODEL}/1"
    fn = ctl.client.get_function(MODEL)
    assert fn["state"] == "ready" and fn["platform"] == "process"
    env = {e["name"]: e["value"] for e in fn["spec"]["spec"]["env"]}
    assert env["MODEL_URI"] == f"models:/{MODEL}@champion"
    _check_serving(ctl, first, 1)
    assert recs["score"].results["served_versions"] == [f"{MODEL}/1"]

    # The monitor compared the served window with the bars before it.
    mon = recs["monitor"].results
    assert mon["features_checked"] > 10
    assert math.isfinite(mon["max_psi"]) and mon["max_psi_feature"]
    assert 0 <= mon["drifted_count"] <= mon["features_checked"]
    assert isinstance(mon["alert"], bool) and 0.0 <= mon["hit_rate"] <= 1.0
    drift = DataItem(first.steps["monitor"].outputs["drift"]).as_df()
    assert len(drift) == mon["features_checked"]

    # --- again, another grid: cached up to the features, a new challenger ---------------------
    second = _walkthrough(c_grid=SECOND_GRID).run()
    print(f"second run: {_timings(second)}", file=sys.stderr)
    assert second.state == "completed", second.error
    recs2 = _check_step_runs(db, second)
    for step in ("data", "features"):
        assert second.steps[step].state == "cached" and second.steps[step].cached
        assert second.steps[step].run_uid == first.steps[step].run_uid
    assert not second.steps["train"].cached
    reg2 = second.steps["register"].results
    assert (reg2["version"], reg2["action"]) == (2, "registered")
    assert [v.version for v in list_model_versions(MODEL)] == [2, 1]

    decision = recs2["promote"].results
    assert (decision["challenger_version"], decision["champion_version"]) == (2, 1)
    assert decision["improvement"] == pytest.approx(
        decision["challenger_metric"] - decision["champion_metric"]
    )
    promoted = decision["promoted"]
    assert promoted == (decision["improvement"] > 0)  # min_improvement 0
    champion = 2 if promoted else 1
    assert decision["new_champion_version"] == champion
    assert get_model_version(MODEL, "champion").version == champion
    if promoted:
        assert get_model_version(MODEL, "previous-champion").version == 1
    print(f"second run: promoted={promoted}: {decision['reason']}", file=sys.stderr)

    # Nothing to deploy: the alias (moved or not) decides what the function serves.
    dep2 = recs2["deploy"].results
    assert dep2["action"] == "unchanged"
    assert dep2["served_version"] == f"{MODEL}/{champion}"
    _check_serving(ctl, second, champion)
    assert recs2["score"].results["served_versions"] == [f"{MODEL}/{champion}"]
    assert "drifted_count" in recs2["monitor"].results

    # The data window is the shipped one (the cached features are over the same bars).
    bars = DataItem(first.steps["data"].outputs["bars"]).as_df()
    ts = pd.to_datetime(bars["timestamp"], utc=True)
    assert ts.min() >= pd.Timestamp("2024-06-01", tz="UTC") > ts.min() - pd.Timedelta(hours=2)
