"""The seam between tracked runs and the layers above: job requests and the plugin registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickrun.functions.errors import BadRequestError, InvalidFieldError
from tickrun.functions.runs import plugins
from tickrun.functions.runs.job import load_run, main
from tickrun.functions.runs.plugins import (
    JOB_RUNNERS,
    MAX_PARALLEL,
    RUN_TARGETS,
    JobRequest,
    ResolvedTarget,
)
from tickrun.functions.runs.runner import run_function

from .jobs_for_tests import ref


def test_a_request_without_hyperparameters_is_not_a_sweep() -> None:
    request = JobRequest(runner="subprocess", target="f.py:fn", uid="u1", params={"lr": 0.1})
    kwargs = request.run_kwargs()
    assert kwargs["hyperparams"] is None and kwargs["uid"] == "u1"
    assert kwargs["params"] == {"lr": 0.1} and "artifact_path" not in kwargs
    assert "runner" not in kwargs and "target" not in kwargs


def test_a_request_survives_json_unchanged() -> None:
    request = JobRequest(
        runner="container",
        target="hub://toy:1.2.3#main",
        uid="u2",
        params={"x": [1, 2], "name": "a"},
        inputs={"data": "s3://b/k.csv"},
        hyperparams={"depth": [2, 4]},
        selector="max.accuracy",
        labels={"team": "quant"},
        artifact_path="/tmp/a",
    )
    again = JobRequest.model_validate_json(request.model_dump_json())
    assert again == request
    assert again.run_kwargs()["hyperparams"] == {"depth": [2, 4]}


def test_unknown_request_fields_are_refused() -> None:
    with pytest.raises(ValueError, match=r"db\n\s+Unexpected keyword argument"):
        JobRequest.model_validate({"runner": "p", "target": "t", "uid": "u", "db": "x"})
    with pytest.raises(ValueError, match="unexpected keyword argument 'db'"):
        JobRequest.from_trusted({"runner": "p", "target": "t", "uid": "u", "db": "x"})


def test_limits_hold_when_a_request_is_built_in_code_and_when_it_is_read() -> None:
    with pytest.raises(InvalidFieldError, match="parallel: Input should be less than"):
        JobRequest(runner="p", target="t", uid="u", parallel=MAX_PARALLEL + 1)
    with pytest.raises(InvalidFieldError, match="hyper_strategy: Input should be 'grid'"):
        JobRequest(runner="p", target="t", uid="u", hyper_strategy="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"parallel\n\s+Input should be less than"):
        JobRequest.model_validate({"runner": "p", "target": "t", "uid": "u", "parallel": 10**6})


def test_the_installed_entry_points_name_the_controller_and_the_hub() -> None:
    from tickrun.controller.jobs import run_job
    from tickrun.hub.targets import resolve_target

    assert plugins.job_launcher("subprocess") is run_job
    assert plugins.job_launcher("container") is run_job
    assert plugins.target_resolver("hub") is resolve_target
    assert "hub" in plugins.names(RUN_TARGETS)


def test_a_missing_plugin_is_a_clear_bad_request() -> None:
    with pytest.raises(BadRequestError, match=r"job runner 'mars' needs a tickrun.job_runners"):
        plugins.job_launcher("mars")
    with pytest.raises(BadRequestError, match="installed: .*subprocess"):
        plugins.job_launcher("mars")


def test_a_plugin_set_in_code_wins_over_the_entry_point() -> None:
    seen: list[JobRequest] = []

    def launch(request: JobRequest) -> int:
        seen.append(request)
        return 7

    plugins.register(JOB_RUNNERS, "subprocess", launch)
    try:
        request = JobRequest(runner="subprocess", target="x.py:f", uid="u3")
        assert plugins.job_launcher("subprocess")(request) == 7 and seen == [request]
    finally:
        plugins.unregister(JOB_RUNNERS, "subprocess")
    assert plugins.job_launcher("subprocess") is not launch


def test_run_function_resolves_a_scheme_through_its_plugin(home: Path) -> None:
    checked: list[dict[str, object]] = []

    def noop(context: object, x: int = 0) -> None:
        return None

    def resolve(target: str) -> ResolvedTarget:
        return ResolvedTarget(
            fn=noop,
            ref=target,
            labels={"from": target},
            name="via-plugin",
            check=lambda params, inputs: checked.append(dict(params)),
        )

    plugins.register(RUN_TARGETS, "toyscheme", resolve)
    try:
        run = run_function("toyscheme://thing", params={"x": 1}, progress=False)
    finally:
        plugins.unregister(RUN_TARGETS, "toyscheme")
    assert run.state == "completed"
    assert run.name == "via-plugin" and run.record.labels["from"] == "toyscheme://thing"
    assert checked == [{"x": 1}]


def test_the_job_process_runs_the_request_under_its_uid(home: Path) -> None:
    request = JobRequest(runner="subprocess", target=ref("noop"), uid="a" * 32, name="from-json")
    with pytest.raises(SystemExit) as stopped:
        main([request.model_dump_json()])
    assert stopped.value.code == 0
    run = load_run("a" * 32)
    assert run.state == "completed" and run.name == "from-json"


def test_the_job_process_refuses_a_bad_request(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(['{"runner": "subprocess"}'])
    assert stopped.value.code == 2
    assert "bad request" in capsys.readouterr().err
