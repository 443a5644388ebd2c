"""A run split by index (functions/runs/indexed.py): the launcher records it up front and
concludes it; each index runs in its own process, given only the request and its index, as a
Kubernetes indexed Job's pods are. Here the processes are plain interpreters on a SQLite DB."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from tickrun.functions.errors import BadRequestError
from tickrun.functions.launch import python_command
from tickrun.functions.runs import RunState, SqlRunDB, TrackingSettings
from tickrun.functions.runs.indexed import (
    EXIT_BAD_REQUEST,
    EXIT_FAILED,
    INDEX_ENV,
    IndexedRun,
    iteration_of,
    main,
)
from tickrun.functions.runs.plugins import JobRequest

from .jobs_for_tests import ref


def _request(**kw: object) -> JobRequest:
    base: dict[str, object] = {"runner": "kubernetes", "target": ref("sweep"), "uid": "u" * 32}
    return JobRequest.model_validate({**base, **kw})


def _index(request: JobRequest, index: int | None) -> subprocess.CompletedProcess[str]:
    """One worker, as a pod runs it: the request on the command line, the index by env."""
    env = {k: v for k, v in os.environ.items() if k != INDEX_ENV}
    if index is not None:
        env[INDEX_ENV] = str(index)
    cmd = python_command(main, request.model_dump_json(), on_parent_death=None, interrupt=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_sweep_by_index_is_recorded_up_front_run_apart_and_concluded(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    request = _request(
        hyperparams={"x": [1, 2, 3], "y": [1]},
        params={"fail_on": 3},
        selector="max.score",
        parallel=2,
    )
    out = io.StringIO()
    run = IndexedRun(request, settings, db=db, out=out)
    assert run.plan() == 3
    run.start()
    parent = db.get_run(request.uid)
    assert parent.state is RunState.RUNNING
    its = [r for r in db.list_runs(None, uid=request.uid) if r.iteration]
    assert sorted((r.iteration, r.state, r.params["x"]) for r in its) == [
        (1, RunState.CREATED, 1),
        (2, RunState.CREATED, 2),
        (3, RunState.CREATED, 3),
    ]
    assert run.poll() is False
    codes = [_index(request, i).returncode for i in (1, 0, 2)]
    assert codes == [0, 0, EXIT_FAILED]  # x=3 raises: recorded, and the index fails
    assert run.poll() is True
    assert run.counts() == (2, 1, 3)
    assert run.conclude() is RunState.COMPLETED
    parent = db.get_run(request.uid)
    assert parent.state is RunState.COMPLETED
    assert parent.results["best_iteration"] == 2 and parent.results["score"] == 0
    keys = {a.key for a in db.list_artifacts(uid=request.uid, iteration=0)}
    assert {"iteration_results", "note"} <= keys  # the winner's note, as a local sweep lists
    assert db.get_run(request.uid, 3).error == "RuntimeError: x=3 is cursed"
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("[") for line in lines)


def test_stop_condition_ends_the_queue_and_later_indexes_do_nothing(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    request = _request(hyperparams={"x": [2, 1, 0]}, stop_condition="score >= -1")
    run = IndexedRun(request, settings, db=db, out=io.StringIO())
    run.plan()
    run.start()
    assert _index(request, 0).returncode == 0
    assert run.poll() is True  # x=2 meets the stop condition: 2 and 3 will never run
    assert run.stopped_early and run.not_run == {2, 3}
    late = _index(request, 2)
    assert late.returncode == 0 and "already ended (aborted)" in late.stderr
    assert db.get_run(request.uid, 3).state is RunState.ABORTED
    assert db.get_run(request.uid, 3).results == {}
    assert run.conclude() is RunState.COMPLETED
    assert db.get_run(request.uid).results["best_iteration"] == 1


def test_plain_run_is_index_zero_and_abort_ends_what_never_ran(
    settings: TrackingSettings, db: SqlRunDB
) -> None:
    request = _request(params={"x": 2})
    assert iteration_of(request, 0) == 0
    run = IndexedRun(request, settings, db=db, out=io.StringIO())
    assert run.plan() == 1
    run.start()
    assert db.get_run(request.uid).state is RunState.CREATED
    assert _index(request, None).returncode == 0  # no index in the env: a Job of one
    assert run.poll() is True and run.conclude() is RunState.COMPLETED
    assert db.get_run(request.uid).results["score"] == -1

    sweep = _request(uid="v" * 32, hyperparams={"x": [1, 2]})
    run = IndexedRun(sweep, settings, db=db, out=io.StringIO())
    run.plan()
    run.start()
    run.abort("interrupted")
    assert [r.state for r in db.list_runs(None, uid=sweep.uid)] == [RunState.ABORTED] * 3
    assert _index(sweep, 1).returncode == 0  # a pod that starts late runs nothing


def test_bad_requests_fail_before_or_without_running(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path
) -> None:
    with pytest.raises(BadRequestError, match="selector"):
        IndexedRun(_request(hyperparams={"x": [1]}, selector="best.x"), settings, db=db)
    with pytest.raises(BadRequestError, match="non-empty list"):
        IndexedRun(_request(hyperparams={"x": []}), settings, db=db).plan()
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        _request(parallel=0)
    missing = _request(uid="w" * 32, target=f"{tmp_path / 'gone.py'}:fn")
    run = IndexedRun(missing, settings, db=db, out=io.StringIO())
    run.plan()
    run.start()
    worker = _index(missing, None)
    assert worker.returncode == EXIT_BAD_REQUEST, worker.stderr
    rec = db.get_run(missing.uid)
    assert rec.state is RunState.ERROR and "gone.py" in (rec.error or "")
    bad_json = subprocess.run(
        python_command(main, "{not json", on_parent_death=None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_json.returncode == EXIT_BAD_REQUEST and "bad request" in bad_json.stderr
    assert "Traceback" not in bad_json.stderr + worker.stderr


def test_index_zero_of_a_sweep_is_its_first_iteration() -> None:
    sweep = _request(hyperparams={"x": [1, 2]})
    assert [iteration_of(sweep, i) for i in (0, 1)] == [1, 2]
    with pytest.raises(BadRequestError):
        iteration_of(sweep, -1)
