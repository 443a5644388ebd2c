"""Steps as jobs through the tickrun.job_runners plugin (in-process stand-ins for the runners)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tickrun import Pipeline
from tickrun.functions.runs import SqlRunDB, run_function
from tickrun.functions.runs.plugins import JOB_RUNNERS, JobRequest, register, unregister
from tickrun.hub.catalogue import BUNDLED_ROOT
from tickrun.hub.sampledata import market_data

from .conftest import job


class Launcher:
    """Runs each request here as the job process would (or only records it)."""

    def __init__(self, *, run: bool, status: int = 0) -> None:
        self.requests: list[JobRequest] = []
        self.run = run
        self.status = status

    def __call__(self, request: JobRequest) -> int:
        self.requests.append(request)
        if not self.run:
            return self.status
        done = run_function(request.target, **request.run_kwargs())
        return 0 if done.state == "completed" else 1


@pytest.fixture
def fake_runners() -> Iterator[dict[str, Launcher]]:
    runners = {"fake": Launcher(run=True), "kubernetes": Launcher(run=False, status=3)}
    for name, launcher in runners.items():
        register(JOB_RUNNERS, name, launcher)
    yield runners
    for name in runners:
        unregister(JOB_RUNNERS, name)


def test_each_step_is_a_job_request_read_back_from_the_run_db(
    db: SqlRunDB, fake_runners: dict[str, Launcher]
) -> None:
    p = Pipeline("as-jobs")
    bars = p.step("bars", job("bars"), inputs={"market": str(market_data())}, params={"rows": 9})
    p.step("returns", job("returns"), inputs={"bars": bars.output("bars")})
    run = p.run(runner="fake")
    assert run.state == "completed", run.error
    sent = fake_runners["fake"].requests
    assert [r.name for r in sent] == ["bars", "returns"]
    assert sent[0].uid == run.steps["bars"].run_uid and sent[0].runner == "fake"
    assert sent[1].inputs == {"bars": run.steps["bars"].outputs["bars"]}
    assert sent[1].labels["tickrun.pipeline-run"] == run.uid
    assert sent[0].artifact_path is None  # the runner's own default unless one was chosen
    assert run.steps["returns"].results["bars_rows"] == 9
    assert db.get_run(run.steps["returns"].run_uid or "").state.value == "completed"


def test_a_job_that_records_nothing_fails_its_step(
    db: SqlRunDB, fake_runners: dict[str, Launcher]
) -> None:
    p = Pipeline("k8s-like")
    p.step("train", "hub://auto_trainer:1.1.0#train", inputs={"dataset": str(market_data())})
    run = p.run(runner="kubernetes")
    step = run.steps["train"]
    assert step.state == "error" and run.state == "error"
    assert "exited with status 3 before recording" in (step.error or "")
    # A hub item goes to a Job as the item's file with its requirements (its image is built
    # from the folder), still labelled with the item.
    (req,) = fake_runners["kubernetes"].requests
    folder = BUNDLED_ROOT / "auto_trainer" / "v1_1_0"
    assert req.target == f"{folder / 'auto_trainer.py'}:train"
    item = yaml.safe_load((folder / "item.yaml").read_text())
    assert req.requirements == item["requirements"]
    assert req.labels["hub.item"] == "auto_trainer" and req.labels["hub.version"] == "1.1.0"
    assert req.labels["tickrun.pipeline-step"] == "train"


def test_a_closure_cannot_be_a_job(db: SqlRunDB, fake_runners: dict[str, Launcher]) -> None:
    def local_only(context: object) -> None:
        return None

    p = Pipeline("closure-job")
    p.step("inline", local_only)
    run = p.run(runner="fake")
    assert run.steps["inline"].state == "error"
    assert "not a lambda or a closure" in (run.steps["inline"].error or "")
    assert run.steps["inline"].attempts == 1
    assert fake_runners["fake"].requests == []
