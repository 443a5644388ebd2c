from __future__ import annotations

import pytest

from tickrun.functions.errors import BadRequestError
from tickrun.functions.runs import RunState, SqlRunDB, TrackingSettings, run_function
from tickrun.functions.runs.hyper import expand, parse_condition
from tickrun.functions.runs.sweepresult import parse_selector

from .jobs_for_tests import ref


def test_expand_grid_list_random() -> None:
    grid = expand({"a": [1, 2], "b": ["x", "y", "z"]}, "grid")
    assert len(grid) == 6 and grid[0] == {"a": 1, "b": "x"} and grid[-1] == {"a": 2, "b": "z"}
    assert expand({"a": [1, 2], "b": [3, 4]}, "list") == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(BadRequestError):
        expand({"a": [1, 2], "b": [3]}, "list")
    r1 = expand({"a": list(range(100))}, "random", max_iterations=7, seed=3)
    assert len(r1) == 7 and r1 == expand({"a": list(range(100))}, "random", 7, seed=3)
    assert len(expand({"a": [1, 2, 3]}, "grid", max_iterations=2)) == 2
    with pytest.raises(BadRequestError):
        expand({"a": []}, "grid")
    with pytest.raises(BadRequestError):
        expand({"a": [1]}, "bayes")


def test_selector_and_condition_parsing() -> None:
    assert parse_selector("max.accuracy") == ("max", "accuracy")
    assert parse_selector("min.loss") == ("min", "loss")
    with pytest.raises(BadRequestError):
        parse_selector("best.accuracy")
    cond = parse_condition("accuracy >= 0.9")
    assert cond({"accuracy": 0.95}) and not cond({"accuracy": 0.5}) and not cond({})
    assert parse_condition("loss<1")({"loss": 0.5})
    with pytest.raises(BadRequestError):
        parse_condition("__import__('os').system('x')")


def test_grid_sweep_picks_best_and_survives_failing_iteration(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        ref("sweep"),
        params={"fail_on": 3.0},
        hyperparams={"x": [1.0, 2.0, 3.0], "y": [0.0, 1.0]},
        selector="max.score",
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed", run.error
    assert len(run.iterations) == 6
    states = {(i.params["x"], i.params["y"]): i.state for i in run.iterations}
    assert states[(3.0, 0.0)] is RunState.ERROR and states[(3.0, 1.0)] is RunState.ERROR
    failed = [i for i in run.iterations if i.state is RunState.ERROR]
    assert all(i.error == "RuntimeError: x=3.0 is cursed" for i in failed)
    best = next(i for i in run.iterations if i.params == {"fail_on": 3.0, "x": 2.0, "y": 1.0})
    assert run.results["best_iteration"] == best.iteration
    assert run.results["score"] == 0.0
    assert run.record.best_iteration == best.iteration
    # Parent: iteration_results table, a plot, and the best iteration's artifacts.
    table = run.artifact("iteration_results").as_df()
    assert list(table["iteration"]) == [1, 2, 3, 4, 5, 6]
    assert set(table["state"]) == {"completed", "error"}
    assert "param.x" in table.columns and "result.score" in table.columns
    assert run.artifact("iteration_plot").get()[:4] == b"\x89PNG"
    assert run.artifact("note").get() == b"x=2.0 y=1.0"
    # The DB agrees, and store://project/uid/note resolves to the winner's file.
    children = [r for r in db.list_runs(uid=run.uid) if r.iteration > 0]
    assert len(children) == 6
    assert db.get_run(run.uid).results["best_iteration"] == best.iteration
    assert db.get_artifact(run.project, run.uid, 0, "note").meta["from_iteration"] == best.iteration


def test_min_selector_and_stop_condition(settings: TrackingSettings, db: SqlRunDB) -> None:
    run = run_function(
        ref("sweep"),
        hyperparams={"x": [0.0, 2.0, 5.0, 6.0], "y": [1.0]},
        selector="min.loss",
        stop_condition="loss <= 0",
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed"
    assert [i.params["x"] for i in run.iterations] == [0.0, 2.0]  # stopped after x=2
    assert run.results["loss"] == 0.0


def test_list_strategy_max_iterations(settings: TrackingSettings, db: SqlRunDB) -> None:
    run = run_function(
        ref("sweep"),
        hyperparams={"x": [1.0, 2.0, 3.0], "y": [5.0, 6.0, 7.0]},
        hyper_strategy="list",
        max_iterations=2,
        selector="max.score",
        settings=settings,
        db=db,
        progress=False,
    )
    assert [(i.params["x"], i.params["y"]) for i in run.iterations] == [(1.0, 5.0), (2.0, 6.0)]


def test_all_iterations_failing_fails_the_parent(settings: TrackingSettings, db: SqlRunDB) -> None:
    run = run_function(
        ref("sweep"),
        params={"fail_on": 1.0},
        hyperparams={"x": [1.0]},
        selector="max.score",
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "error"
    assert "1 of 1 iterations failed" in (run.error or "")
    assert db.get_run(run.uid).state is RunState.ERROR


def test_parallel_iterations_in_processes_with_progress(
    settings: TrackingSettings, db: SqlRunDB, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_function(
        ref("sweep"),
        params={"fail_on": 1.0},
        hyperparams={"x": [1.0, 2.0, 3.0, 4.0]},
        selector="max.score",
        parallel=2,
        settings=settings,
        db=db,
    )
    assert run.state == "completed", run.error
    assert {i.pid for i in run.iterations}.isdisjoint({run.record.pid})
    assert len({i.pid for i in run.iterations}) <= 2  # bounded pool
    assert run.results["best_iteration"] == next(
        i.iteration for i in run.iterations if i.params["x"] == 2.0
    )
    assert sum(i.state is RunState.ERROR for i in run.iterations) == 1
    err = capsys.readouterr().err
    assert err.count("] iteration ") == 4
    assert "[4/4]" in err


def test_a_crashed_worker_fails_only_its_own_iteration(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        ref("crashes"),
        params={"crash_on": 2.0},
        hyperparams={"x": [1.0, 2.0, 3.0, 4.0, 5.0]},
        selector="max.score",
        parallel=2,
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed", run.error
    by_x = {i.params["x"]: i for i in run.iterations}
    assert sorted(by_x) == [1.0, 2.0, 3.0, 4.0, 5.0]
    crashed = by_x.pop(2.0)
    assert crashed.state is RunState.ERROR
    assert "worker process exited with code 1" in (crashed.error or "")
    assert all(i.state is RunState.COMPLETED for i in by_x.values()), [
        (i.params, i.state, i.error) for i in by_x.values()
    ]
    assert run.results["score"] == 5.0
    # The run DB has every iteration's final state, the crashed one included.
    stored = {r.iteration: r for r in db.list_runs(uid=run.uid) if r.iteration > 0}
    assert {i: r.state for i, r in stored.items()} == {i.iteration: i.state for i in run.iterations}
    assert stored[crashed.iteration].error == crashed.error


def test_queued_iterations_are_recorded_as_created(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        ref("peeks"),
        hyperparams={"x": [1.0, 2.0, 3.0]},
        selector="max.score",
        settings=settings,
        db=db,
        progress=False,
    )
    assert run.state == "completed", run.error
    first = next(i for i in run.iterations if i.iteration == 1)
    assert first.results["seen"] == {"0": "running", "1": "running", "2": "created", "3": "created"}
    queued = db.get_run(run.uid, 3)
    assert queued.state is RunState.COMPLETED


def test_iterations_skipped_by_the_stop_condition_end_aborted(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        ref("sweep"),
        hyperparams={"x": [2.0, 3.0, 4.0], "y": [1.0]},
        selector="min.loss",
        stop_condition="loss <= 0",
        settings=settings,
        db=db,
        progress=False,
    )
    assert [i.params["x"] for i in run.iterations] == [2.0]
    stored = {r.iteration: r for r in db.list_runs(uid=run.uid) if r.iteration > 0}
    assert stored[1].state is RunState.COMPLETED
    assert {stored[2].state, stored[3].state} == {RunState.ABORTED}
    assert "stop condition" in (stored[2].error or "")
