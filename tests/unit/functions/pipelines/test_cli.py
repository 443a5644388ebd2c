"""``tickrun pipeline run|show|list``, the job entry schedules use, and ``--schedule``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tickrun.cli import main
from tickrun.functions.pipelines.job import JOB_TARGET, load_pipeline
from tickrun.functions.runs import SqlRunDB, TrackingSettings, run_function
from tickrun.functions.runs.plugins import CONTROLLER_CLIENTS, JobRequest, register, unregister
from tickrun.hub.sampledata import market_data

from .conftest import JOBS

DEFINITION = f'''
from tickrun import Pipeline

JOBS = "{JOBS}"

prices = Pipeline("cli-prices", project="cli")
bars = prices.step("bars", JOBS + ":bars", inputs={{"market": "{market_data()}"}}, params={{"rows": 30}})
prices.step("returns", JOBS + ":returns", inputs={{"bars": bars.output("bars")}})


def make(rows=10, fail="no"):
    p = Pipeline("cli-made", project="cli")
    b = p.step("bars", JOBS + ":bars", inputs={{"market": "{market_data()}"}}, params={{"rows": rows}})
    if fail == "yes":
        p.step("bad", JOBS + ":fail", after=[b])
    return p

not_a_pipeline = 3
'''


@pytest.fixture
def definition(tmp_path: Path, home: Path) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(DEFINITION)
    return path


def tickrun(*argv: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    return int(exc.value.code or 0)


def test_run_show_and_list(
    definition: Path, db: SqlRunDB, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tickrun("pipeline", "run", f"{definition}:prices", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "completed"
    uid = out["uid"]
    assert [n["state"] for n in out["graph"]["nodes"]] == ["completed", "completed"]
    assert db.get_run(uid).labels["tickrun.pipeline"] == "cli-prices"

    assert tickrun("pipeline", "run", f"{definition}:prices") == 0
    text = capsys.readouterr().out
    assert "cached" in text and "bars -> returns" in text
    assert tickrun("pipeline", "run", f"{definition}:prices", "--no-cache") == 0
    assert "cached" not in capsys.readouterr().out

    assert tickrun("pipeline", "show", uid) == 0
    shown = capsys.readouterr().out
    returns_uid = out["graph"]["nodes"][1]["run_uid"]
    assert f"pipeline cli-prices run {uid}: completed" in shown
    assert returns_uid in shown
    assert tickrun("pipeline", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 3 and listed[-1]["uid"] == uid
    assert listed[-1]["steps"] == "completed=2"
    assert listed[0]["steps"] == "completed=2" and listed[1]["steps"] == "cached=2"
    assert tickrun("pipeline", "show", returns_uid) == 2  # a step run, not a pipeline run
    assert "not a pipeline run" in capsys.readouterr().err


def test_a_factory_takes_params_and_a_failed_pipeline_exits_1(
    definition: Path, db: SqlRunDB, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tickrun("pipeline", "run", f"{definition}:make", "--param", "rows=12") == 0
    run = db.list_runs("cli", label="tickrun.pipeline-step=bars", limit=1)[0]
    assert run.results["rows"] == 12
    assert tickrun("pipeline", "run", f"{definition}:make", "-p", "fail=yes") == 1
    assert "step bad failed" in capsys.readouterr().out
    assert tickrun("pipeline", "run", f"{definition}:not_a_pipeline") == 2
    assert "not a Pipeline" in capsys.readouterr().err
    assert tickrun("pipeline", "run", f"{definition}:missing") == 2
    assert tickrun("pipeline", "run", f"{definition.parent / 'nope.py'}:p") == 2


def test_the_job_entry_makes_its_own_run_the_pipeline_run(
    definition: Path, settings: TrackingSettings, db: SqlRunDB
) -> None:
    run = run_function(
        JOB_TARGET,
        params={"pipeline": f"{definition}:make", "params": {"rows": 7}, "parallel": 2},
        project="cli",
        settings=settings,
    )
    assert run.state == "completed", run.error
    rec = db.get_run(run.uid)
    assert rec.labels["tickrun.pipeline"] == "cli-made"
    assert rec.labels["tickrun.kind"] == "pipeline"
    node = rec.results["graph"]["nodes"][0]
    step = db.get_run(node["run_uid"])
    assert step.labels["tickrun.pipeline-run"] == run.uid
    assert step.results["rows"] == 7
    # The run's own log is there too when a line reached it while it ran (seen under load in
    # CI: its live log was published); its one output is the graph.
    keys = [a.key for a in db.list_artifacts("cli", uid=run.uid)]
    assert [k for k in keys if k != "log"] == ["graph"], keys
    failed = run_function(
        JOB_TARGET, params={"pipeline": f"{definition}:make", "params": {"fail": "yes"}}
    )
    assert failed.state == "error" and "step bad failed" in (failed.error or "")


def test_load_pipeline_refuses_what_is_not_one(definition: Path) -> None:
    assert load_pipeline(f"{definition}:prices").name == "cli-prices"
    assert load_pipeline(f"{definition}:make", {"rows": 3}).steps["bars"].params == {"rows": 3}
    with pytest.raises(Exception, match="FILE.py:NAME"):
        load_pipeline("no-colon")


class FakeController:
    """Records create_schedule calls as the controller client would send them."""

    created: list[dict[str, Any]] = []

    def __init__(self, url: str = "http://fake", token: str | None = None) -> None:
        self.url = url

    @classmethod
    def from_env(cls) -> FakeController:
        return cls()

    def create_schedule(
        self, name: str, cron: str, job: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        FakeController.created.append({"name": name, "cron": cron, "job": job, **kw})
        return {"name": name, "cron": cron, "timezone": kw.get("timezone", "UTC")}


@pytest.fixture
def fake_controller() -> Iterator[type[FakeController]]:
    FakeController.created = []
    register(CONTROLLER_CLIENTS, "default", FakeController)
    yield FakeController
    unregister(CONTROLLER_CLIENTS, "default")


def test_schedule_registers_the_pipeline_job_on_the_controller(
    definition: Path,
    db: SqlRunDB,
    fake_controller: type[FakeController],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = tickrun(
        "pipeline", "run", f"{definition}:prices", "--schedule", "*/5 * * * *", "--parallel", "2"
    )
    assert code == 0
    assert "schedule cli-prices created" in capsys.readouterr().out
    (sent,) = fake_controller.created
    assert sent["name"] == "cli-prices" and sent["cron"] == "*/5 * * * *"
    job = sent["job"]
    assert job["target"] == JOB_TARGET and job["runner"] == "subprocess"
    assert job["params"] == {
        "pipeline": f"{definition.resolve()}:prices",
        "runner": "local",
        "parallel": 2,
        "cache": True,
    }
    assert job["labels"]["tickrun.pipeline"] == "cli-prices"
    # What the controller builds a firing from is a valid JobRequest again.
    JobRequest.model_validate({**job, "uid": "f" * 32})
    assert db.list_runs(limit=10) == []  # nothing ran here
