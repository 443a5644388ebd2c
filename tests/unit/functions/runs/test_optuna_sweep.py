"""strategy="optuna": TPE trials asked a batch of ``parallel`` at a time, pruned mid-run by the
sweep's median pruner through the pool's pipes, reproducible with a seed, the study's plots on
the parent; the search-space syntax (hyper file, JSON and the CLI's LOW..HIGH)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tickrun.cli import main
from tickrun.functions.errors import BadRequestError
from tickrun.functions.runs import RunObject, RunState, SqlRunDB, TrackingSettings, run_function
from tickrun.functions.runs.cli import parse_hyper, parse_range, read_hyper_file
from tickrun.functions.runs.indexed import IndexedRun
from tickrun.functions.runs.optunasweep import search_space
from tickrun.functions.runs.plugins import JobRequest

from .sweep_jobs_for_tests import ref

SPACE = {"x": {"low": -4.0, "high": 8.0}, "shape": ["flat", "bump"]}
STEPS = 6  # climbs' default


def _sweep(settings: TrackingSettings, db: SqlRunDB, seed: int, parallel: int) -> RunObject:
    return run_function(
        ref("climbs"),
        hyperparams=SPACE,
        hyper_strategy="optuna",
        selector="max.score",
        max_iterations=16,
        parallel=parallel,
        seed=seed,
        settings=settings,
        db=db,
        progress=False,
    )


def _trace(run: RunObject) -> list[tuple[int, str, float, str, str]]:
    return [
        (i.iteration, i.state.value, i.params["x"], i.params["shape"], i.labels["hyper.trial"])
        for i in sorted(run.iterations, key=lambda i: i.iteration)
    ]


def test_parallel_optuna_sweep_prunes_reproducibly_and_plots(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = _sweep(settings, db, seed=3, parallel=2)
    assert run.state == "completed", run.error
    assert run.record.labels["hyper.strategy"] == "optuna"
    its = run.iterations
    assert len(its) == 16
    assert {i.pid for i in its}.isdisjoint({run.record.pid})  # in the pool's workers
    pruned = [i for i in its if i.state is RunState.ABORTED]
    completed = [i for i in its if i.state is RunState.COMPLETED]
    assert pruned and len(completed) >= 5 and len(pruned) + len(completed) == 16
    assert run.results["pruned_iterations"] == len(pruned)
    for i in pruned:
        # Stopped mid-run by the sweep's answer: no final score, fewer steps than it had.
        assert i.labels["hyper.pruned"] == "true"
        assert (i.error or "").startswith("pruned at step ")
        assert "score" not in i.results and i.results["stopped_at"] < STEPS - 1
        # Median pruning: its value at that step trails the median of completed trials there.
        step, value = i.results["intermediate_step"], i.results["intermediate_value"]
        batch_start = (i.iteration - 1) // 2 * 2 + 1  # the study knows earlier batches only
        earlier = [c for c in completed if c.iteration < batch_start]
        at_step = [c.results["score"] - 0.01 * (STEPS - step) for c in earlier]
        assert value < statistics.median(at_step)
    best = max(completed, key=lambda i: i.results["score"])
    assert run.results["best_iteration"] == best.iteration
    assert run.results["score"] == best.results["score"]
    # TPE concentrates on the good region once it has a history.
    assert abs(best.params["x"] - 2) < 1.0
    for key in ("optimization_history", "param_importances"):
        assert run.artifact(key).get()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run DB has the trials' parameters and ends as the sweep saw them.
    stored = {r.iteration: r for r in db.list_runs(uid=run.uid) if r.iteration > 0}
    assert {k: (r.state, r.params["x"]) for k, r in stored.items()} == {
        i.iteration: (i.state, i.params["x"]) for i in its
    }

    again = _sweep(settings, db, seed=3, parallel=2)
    assert _trace(again) == _trace(run)
    # Another seed (and one at a time, in this process): other trials, and it prunes too.
    other = _sweep(settings, db, seed=4, parallel=1)
    assert [t[2] for t in _trace(other)] != [t[2] for t in _trace(run)]
    assert {i.pid for i in other.iterations} == {other.record.pid}
    assert other.results["pruned_iterations"] > 0
    assert (
        sum(i.state is RunState.ABORTED for i in other.iterations)
        == (other.results["pruned_iterations"])
    )


def test_optuna_optimizes_the_validation_figure_and_honours_the_stop_condition(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        ref("trains"),
        hyperparams={"c": {"low": 0.0, "high": 4.0}},
        hyper_strategy="optuna",
        selector="max.auc",
        max_iterations=12,
        seed=11,
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed", run.error
    its = run.iterations
    best = max(its, key=lambda i: i.results["validation_auc"])
    assert run.results["best_iteration"] == best.iteration
    assert run.results["selected_on"] == "validation_auc"
    assert run.results["auc"] == best.results["auc"]  # the test figure, as reported
    # The test auc alone would have picked the largest c: the study did not chase it.
    assert max(its, key=lambda i: i.results["auc"]).iteration != best.iteration
    assert abs(best.params["c"] - 2) < 0.5

    stopped = run_function(
        ref("trains"),
        hyperparams={"c": {"low": 0.0, "high": 4.0}},
        hyper_strategy="optuna",
        selector="max.auc",
        stop_condition="validation_auc >= 0.5",
        max_iterations=5,
        seed=11,
        settings=settings,
        db=db,
        progress=False,
    )
    assert [i.iteration for i in stopped.iterations] == [1]
    rest = [r for r in db.list_runs(uid=stopped.uid) if r.iteration > 1]
    assert len(rest) == 4 and all(r.state is RunState.ABORTED for r in rest)
    assert all("stop condition" in (r.error or "") for r in rest)


def test_intermediate_reports_outside_a_pruning_sweep_never_prune(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        ref("climbs"),
        hyperparams={"x": [-4.0, 2.0, 8.0, 9.0, 10.0, 11.0, 12.0]},
        selector="max.score",
        settings=settings,
        db=db,
        progress=False,
    )
    assert all(i.state is RunState.COMPLETED for i in run.iterations)
    assert all(i.results["intermediate_step"] == STEPS - 1 for i in run.iterations)


def test_optuna_refuses_what_it_cannot_run(settings: TrackingSettings, db: SqlRunDB) -> None:
    def sweep(**kw: object) -> None:
        run_function(
            ref("climbs"),
            **{"hyperparams": SPACE, "hyper_strategy": "optuna", "selector": "max.score", **kw},  # type: ignore[arg-type]
            settings=settings,
            db=db,
            progress=False,
        )

    with pytest.raises(BadRequestError, match="needs a selector"):
        sweep(selector=None)
    with pytest.raises(BadRequestError, match="log range needs low > 0"):
        sweep(hyperparams={"x": {"low": 0, "high": 1, "log": True}})
    with pytest.raises(BadRequestError, match="a range is"):
        sweep(hyperparams={"x": {"low": 0, "hi": 1}})
    with pytest.raises(BadRequestError, match="ranges are sampled by --strategy optuna"):
        sweep(hyper_strategy="grid")
    request = JobRequest(
        runner="kubernetes",
        target=ref("climbs"),
        uid="o" * 32,
        hyperparams=SPACE,
        hyper_strategy="optuna",
        selector="max.score",
    )
    with pytest.raises(BadRequestError, match="cannot run as a Kubernetes indexed Job"):
        IndexedRun(request, settings, db=db)
    assert db.list_runs(uid="o" * 32) == []


def test_search_space_from_lists_and_ranges() -> None:
    import optuna.distributions as d

    space = search_space(
        {
            "lr": {"low": 0.001, "high": 1, "log": True},
            "depth": {"low": 2, "high": 8, "step": 2},
            "frac": {"low": 0, "high": 1, "type": "float"},
            "algo": ["xgb", "logreg"],
        }
    )
    assert space["lr"] == d.FloatDistribution(0.001, 1.0, log=True)
    assert space["depth"] == d.IntDistribution(2, 8, step=2)
    assert space["frac"] == d.FloatDistribution(0.0, 1.0)
    assert space["algo"] == d.CategoricalDistribution(["xgb", "logreg"])
    with pytest.raises(BadRequestError, match="int range needs int bounds"):
        search_space({"n": {"low": 1.5, "high": 3, "type": "int"}})


def test_cli_range_syntax_and_hyper_file(tmp_path: Path) -> None:
    assert parse_range("0.01..1:log") == {"low": 0.01, "high": 1, "log": True}
    assert parse_range("2..64:step=2") == {"low": 2, "high": 64, "step": 2}
    assert parse_range("-1..5:float") == {"low": -1, "high": 5, "type": "float"}
    assert parse_range("1e-4..1e-1:log") == {"low": 1e-4, "high": 0.1, "log": True}
    assert parse_range("1,2") is None and parse_range("a..b") is None
    with pytest.raises(BadRequestError, match="unknown option"):
        parse_range("1..2:exp")
    assert parse_hyper(
        ["lr=0.01..1:log", 'm={"low": 1, "high": 3}', "k=1,2,3", "z=[1, 2]", "s=a,b"]
    ) == {
        "lr": {"low": 0.01, "high": 1, "log": True},
        "m": {"low": 1, "high": 3},
        "k": [1, 2, 3],
        "z": [1, 2],
        "s": ["a", "b"],
    }
    f = tmp_path / "space.yaml"
    f.write_text("lr: {low: 0.001, high: 0.5, log: true}\ndepth: [2, 4, 6]\n")
    assert read_hyper_file(str(f)) == {
        "lr": {"low": 0.001, "high": 0.5, "log": True},
        "depth": [2, 4, 6],
    }
    (tmp_path / "bad.json").write_text('{"lr": 0.1}')
    with pytest.raises(BadRequestError, match="must map names to lists"):
        read_hyper_file(str(tmp_path / "bad.json"))


def test_cli_runs_an_optuna_sweep(
    settings: TrackingSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"shape": ["flat", "bump"], "x": [0.0]}))
    argv = [
        "--log-level",
        "ERROR",
        "run",
        ref("climbs"),
        "--strategy",
        "optuna",
        "--hyper-file",
        str(space),
        "--hyper",
        "x=-4.0..8.0",  # wins over the file's x
        "--selector",
        "max.score",
        "--max-iterations",
        "6",
        "--seed",
        "5",
        "--json",
    ]
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "completed", out.get("error")
    assert out["labels"]["hyper.strategy"] == "optuna" and out["labels"]["hyper.seed"] == "5"
    its = SqlRunDB(settings.db_url).list_runs(uid=out["uid"])
    xs = [r.params["x"] for r in its if r.iteration > 0]
    assert len(xs) == 6 and len(set(xs)) == 6 and all(-4.0 <= x <= 8.0 for x in xs)
