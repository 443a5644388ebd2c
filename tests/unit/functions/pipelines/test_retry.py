"""Retry policy: middleware around one step execution, each attempt a tracked run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickrun import Pipeline
from tickrun.functions.errors import BadRequestError, StoreError
from tickrun.functions.pipelines import RetryPolicy
from tickrun.functions.pipelines.model import Step
from tickrun.functions.pipelines.steps import Outcome, StepCall
from tickrun.functions.runs import SqlRunDB

from .conftest import job


def call(name: str = "s") -> StepCall:
    return StepCall(Step(name, "x.py:f"), params={}, inputs={}, labels={}, project="p")


def scripted(results: list[Outcome | Exception]) -> tuple[list[int], object]:
    seen: list[int] = []

    def inner(job: StepCall) -> Outcome:
        seen.append(job.attempt)
        r = results[len(seen) - 1]
        if isinstance(r, Exception):
            raise r
        return r

    return seen, inner


def test_backoff_grows_by_the_factor_and_is_capped() -> None:
    waits: list[float] = []
    policy = RetryPolicy(
        retries=4, backoff_s=0.5, factor=3.0, max_backoff_s=5.0, sleep=waits.append
    )
    seen, inner = scripted([Outcome("error", run_uid=f"r{i}", error="x") for i in range(5)])
    out = policy.wrap(inner)(call())  # type: ignore[arg-type]
    assert seen == [1, 2, 3, 4, 5]
    assert waits == [0.5, 1.5, 4.5, 5.0]
    assert out.state == "error" and out.attempts == 5
    assert out.attempt_uids == ["r0", "r1", "r2", "r3", "r4"]


def test_stops_at_the_first_success_and_labels_each_attempt() -> None:
    waits: list[float] = []
    labels: list[str] = []
    outcomes = [Outcome("error", error="a"), Outcome("completed", run_uid="ok")]

    def inner(job: StepCall) -> Outcome:
        labels.append(job.labels["tickrun.pipeline-attempt"])
        return outcomes[len(labels) - 1]

    out = RetryPolicy(retries=3, backoff_s=2.0, sleep=waits.append).wrap(inner)(call())
    assert out.state == "completed" and out.attempts == 2 and out.attempt_uids == ["ok"]
    assert labels == ["1", "2"] and waits == [2.0]


def test_a_request_refused_as_bad_is_not_retried_but_a_server_error_is() -> None:
    waits: list[float] = []
    seen, inner = scripted([BadRequestError("unknown parameter 'lr'")])
    out = RetryPolicy(retries=3, sleep=waits.append).wrap(inner)(call())  # type: ignore[arg-type]
    assert (out.state, out.attempts, seen, waits) == ("error", 1, [1], [])
    assert out.error == "unknown parameter 'lr'"
    seen, inner = scripted([StoreError("db down"), Outcome("completed", run_uid="u")])
    out = RetryPolicy(retries=1, backoff_s=0.0, sleep=waits.append).wrap(inner)(call())  # type: ignore[arg-type]
    assert (out.state, out.attempts, seen) == ("completed", 2, [1, 2])


def test_no_retries_by_default() -> None:
    seen, inner = scripted([Outcome("error", error="x"), Outcome("completed")])
    out = RetryPolicy().wrap(inner)(call())  # type: ignore[arg-type]
    assert out.state == "error" and seen == [1]


def test_a_flaky_step_is_retried_as_new_tracked_runs(tmp_path: Path, db: SqlRunDB) -> None:
    counter = tmp_path / "calls"
    p = Pipeline("flaky", retries=2, retry_backoff_s=0.05)
    flaky = p.step("flaky", job("flaky"), params={"counter": str(counter), "fail_times": 2})
    p.step("after", job("summary"), params={"source_run": flaky.result("uid")}, after=[flaky])
    run = p.run()
    step = run.steps["flaky"]
    assert run.state == "completed", run.error
    assert step.state == "completed" and step.attempts == 3
    assert len(step.attempt_uids) == 3 and step.attempt_uids[-1] == step.run_uid
    attempts = [db.get_run(u) for u in step.attempt_uids]
    assert [r.state.value for r in attempts] == ["error", "error", "completed"]
    assert [r.labels["tickrun.pipeline-attempt"] for r in attempts] == ["1", "2", "3"]
    assert "attempt 1 fails" in (attempts[0].error or "")
    assert attempts[2].results["calls"] == 3
    # The next step got the successful attempt's uid.
    assert db.get_run(run.steps["after"].run_uid or "").params["source_run"] == step.run_uid
    node = {n["name"]: n for n in run.graph["nodes"]}["flaky"]
    assert node["attempts"] == 3


@pytest.mark.parametrize(("retries", "state"), [(0, "error"), (1, "error"), (2, "completed")])
def test_the_step_fails_when_its_retries_run_out(
    tmp_path: Path, db: SqlRunDB, retries: int, state: str
) -> None:
    p = Pipeline("flaky-out")
    p.step(
        "flaky",
        job("flaky"),
        params={"counter": str(tmp_path / "calls"), "fail_times": 2},
        retries=retries,
        retry_backoff_s=0,
    )
    run = p.run(cache=False)
    assert run.steps["flaky"].state == state
    assert run.steps["flaky"].attempts == min(retries + 1, 3)
    assert run.state == state
