"""Running pipelines in this process: Refs resolved from finished steps, the pipeline run and
its graph, failures skipping dependents, independent steps side by side."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from tickrun import Pipeline
from tickrun.functions.runs import SqlRunDB
from tickrun.functions.runs.dataitem import DataItem
from tickrun.functions.runs.db.lineage import CODE_HASH_LABELS, REQUIREMENTS_LOCK_LABELS
from tickrun.hub.sampledata import market_data

from .conftest import job


def price_pipeline(rows: int = 300) -> Pipeline:
    p = Pipeline("prices", project="btc")
    bars = p.step("bars", job("bars"), inputs={"market": str(market_data())}, params={"rows": rows})
    ret = p.step("returns", job("returns"), inputs={"bars": bars.output("bars")})
    p.step(
        "summary",
        job("summary"),
        inputs={"returns": ret.output("returns")},
        params={"source_run": ret.result("uid"), "mean": ret.result("mean_return")},
    )
    return p


def test_refs_resolve_to_the_producing_runs_outputs_and_results(db: SqlRunDB) -> None:
    run = price_pipeline(rows=300).run(parallel=2)
    assert run.state == "completed", run.error
    bars, ret, summ = (run.steps[n] for n in ("bars", "returns", "summary"))
    assert [s.state for s in (bars, ret, summ)] == ["completed"] * 3
    assert all(s.attempts == 1 and not s.cached for s in (bars, ret, summ))
    # output(key) is the store:// URI the upstream run logged; the step run got it as input.
    returns_run = db.get_run(ret.run_uid or "")
    assert returns_run.inputs["bars"] == bars.outputs["bars"]
    assert bars.outputs["bars"] == f"store://btc/{bars.run_uid}/bars"
    assert returns_run.results["bars_rows"] == 300
    # result("uid") is the run uid, result(key) the value.
    summary_run = db.get_run(summ.run_uid or "")
    assert summary_run.params["source_run"] == ret.run_uid
    assert summary_run.params["mean"] == returns_run.results["mean_return"]
    assert summary_run.results["n"] == 299  # 300 bars, one return lost to pct_change
    expected = pd.read_csv(market_data()).tail(300)["close"].pct_change().dropna().mean()
    assert abs(summary_run.results["mean_seen"] - expected) < 1e-12


def test_the_pipeline_run_is_a_tracked_run_holding_its_graph(db: SqlRunDB) -> None:
    run = price_pipeline(rows=50).run()
    rec = db.get_run(run.uid)
    assert rec.project == "btc" and rec.state.value == "completed"
    assert rec.labels["tickrun.pipeline"] == "prices"
    assert rec.labels["tickrun.kind"] == "pipeline"
    graph = rec.results["graph"]
    assert graph == run.graph
    assert graph["edges"] == [["bars", "returns"], ["returns", "summary"]]
    nodes = {n["name"]: n for n in graph["nodes"]}
    assert {n: nodes[n]["run_uid"] for n in nodes} == {n: s.run_uid for n, s in run.steps.items()}
    assert all(n["state"] == "completed" and n["attempts"] == 1 for n in nodes.values())
    # ... and as a JSON artifact.
    art = db.get_artifact("btc", run.uid, 0, "graph")
    assert art.format == "json"
    assert json.loads(DataItem(art.uri, db=db).get()) == graph
    # Every step run is labelled with its pipeline, pipeline run, step and code.
    for name, step in run.steps.items():
        labels = db.get_run(step.run_uid or "").labels
        assert labels["tickrun.pipeline"] == "prices"
        assert labels["tickrun.pipeline-run"] == run.uid
        assert labels["tickrun.pipeline-step"] == name
        assert len(labels[CODE_HASH_LABELS[0]]) == 64
        assert len(labels[REQUIREMENTS_LOCK_LABELS[0]]) == 64
        assert len(labels["tickrun.pipeline.cache-key"]) == 64
    # The pipeline's runs are found by label.
    assert [r.uid for r in db.list_runs("btc", label="tickrun.pipeline-run=" + run.uid)] == sorted(
        (s.run_uid or "" for s in run.steps.values()),
        key=lambda u: db.get_run(u).created_at,
        reverse=True,
    )


def test_a_failed_step_skips_its_dependents_while_independent_steps_finish(
    db: SqlRunDB,
) -> None:
    p = Pipeline("half-broken")
    bars = p.step("bars", job("bars"), inputs={"market": str(market_data())}, params={"rows": 20})
    bad = p.step("bad", job("fail"), params={"why": "no features today"}, after=[bars])
    p.step("train", job("returns"), inputs={"bars": bars.output("bars")}, after=[bad])
    p.step("report", job("summary"), params={"source_run": bad.result("uid")})
    p.step("independent", job("returns"), inputs={"bars": bars.output("bars")})
    run = p.run(parallel=3)
    states = {n: s.state for n, s in run.steps.items()}
    assert states == {
        "bars": "completed",
        "bad": "error",
        "train": "skipped",
        "report": "skipped",
        "independent": "completed",
    }
    assert run.state == "error"
    assert run.error is not None and "step bad failed" in run.error
    assert "no features today" in run.error
    assert run.steps["train"].run_uid is None
    rec = db.get_run(run.uid)
    assert rec.state.value == "error"
    assert rec.results["steps_skipped"] == 2  # the graph is recorded on a failed run too
    assert {n["name"]: n["state"] for n in rec.results["graph"]["nodes"]} == states


def test_a_ref_to_a_key_the_step_did_not_log_fails_that_step(db: SqlRunDB) -> None:
    p = Pipeline("missing-key")
    bars = p.step("bars", job("bars"), inputs={"market": str(market_data())}, params={"rows": 5})
    p.step("returns", job("returns"), inputs={"bars": bars.output("features")})
    run = p.run()
    assert run.steps["returns"].state == "error"
    assert "step bars has no output 'features'" in (run.steps["returns"].error or "")
    assert "bars" in (run.steps["returns"].error or "")  # the keys it did log are listed


def test_independent_steps_run_at_the_same_time(db: SqlRunDB) -> None:
    def two_sleepers(parallel: int) -> tuple[tuple[float, float], tuple[float, float]]:
        p = Pipeline(f"sleepers-{parallel}")
        p.step("one", job("sleep_step"), params={"seconds": 1.0})
        p.step("two", job("sleep_step"), params={"seconds": 1.0})
        run = p.run(parallel=parallel, cache=False)
        assert run.state == "completed", run.error
        spans = []
        for name in ("one", "two"):
            rec = db.get_run(run.steps[name].run_uid or "")
            spans.append((rec.results["t0"], rec.results["t1"]))
        return spans[0], spans[1]

    (a0, a1), (b0, b1) = two_sleepers(parallel=2)
    assert a0 < b1 and b0 < a1, "two independent steps with parallel=2 did not overlap"
    (a0, a1), (b0, b1) = two_sleepers(parallel=1)
    assert a1 <= b0 or b1 <= a0, "with parallel=1 the steps must run one after the other"


def test_inputs_may_be_plain_paths(tmp_path: Path, db: SqlRunDB) -> None:
    small = tmp_path / "bars.csv"
    pd.read_csv(market_data()).head(30).to_csv(small, index=False)
    p = Pipeline("plain")
    p.step("returns", job("returns"), inputs={"bars": str(small)}, params={"horizon": 2})
    run = p.run()
    assert run.steps["returns"].results["bars_rows"] == 30


def test_a_running_pipeline_shows_its_graph_so_far(
    db: SqlRunDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKRUN_FLUSH_INTERVAL_S", "0.1")
    p = Pipeline("live")
    fast = p.step("fast", job("sleep_step"), params={"seconds": 0})
    p.step("slow", job("sleep_step"), params={"seconds": 2.0}, after=[fast])
    seen: list[dict[str, str]] = []
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(p.run, cache=False)
        deadline = time.monotonic() + 20
        while not done.done() and time.monotonic() < deadline:
            for rec in db.list_runs(label="tickrun.pipeline=live", state="running"):
                graph = rec.results.get("graph")
                if graph:
                    seen.append({n["name"]: n["state"] for n in graph["nodes"]})
            time.sleep(0.05)
        run = done.result()
    assert run.state == "completed"
    assert {"fast": "completed", "slow": "running"} in seen, seen


def test_a_sweep_steps_output_is_the_best_iterations(db: SqlRunDB) -> None:
    p = Pipeline("sweep")
    bars = p.step("bars", job("bars"), inputs={"market": str(market_data())}, params={"rows": 200})
    fit = p.step(
        "fit",
        job("fit_window"),
        inputs={"bars": bars.output("bars")},
        hyperparams={"window": [2, 6, 24]},
        selector="max.score",
    )
    p.step("use", job("summary"), params={"source_run": fit.result("uid")})
    run = p.run()
    assert run.state == "completed", run.error
    closes = pd.read_csv(market_data()).tail(200).reset_index(drop=True)["close"]
    errors = {
        w: float((closes - closes.rolling(w).mean().shift(1)).abs().mean()) for w in (2, 6, 24)
    }
    best = min(errors, key=lambda w: errors[w])
    model = DataItem(run.steps["fit"].outputs["model"], db=db).get().decode()
    assert model == f"window={best}"
    assert (
        db.get_run(run.steps["use"].run_uid or "").params["source_run"] == run.steps["fit"].run_uid
    )
    assert len(db.list_runs(uid=run.steps["fit"].run_uid, limit=10)) == 4  # parent + 3
