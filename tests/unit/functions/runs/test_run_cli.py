from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickrun.cli import main
from tickrun.functions.runs import SqlRunDB, TrackingSettings

from .jobs_for_tests import frame, ref


def cli(*argv: str) -> int:
    try:
        main(["--log-level", "WARNING", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_run_sweep_then_get_and_download(
    settings: TrackingSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    frame().to_csv(data, index=False)
    assert (
        cli("run", ref("reads_inputs"), "--input", f"data={data}", "--json", "--project", "clip")
        == 0
    )
    single = json.loads(capsys.readouterr().out)
    assert single["state"] == "completed" and single["results"]["rows"] == 200
    assert single["inputs"] == {"data": str(data)}

    assert (
        cli(
            "run",
            ref("sweep"),
            "--param",
            "fail_on=3",
            "--hyper",
            "x=1,2,3",
            "--hyper",
            "y=[0.5, 1]",
            "--selector",
            "max.score",
            "--project",
            "clip",
        )
        == 0
    )
    cap = capsys.readouterr()
    assert "state=completed" in cap.out and "result best_iteration" in cap.out
    assert "iterations (6):" in cap.out
    assert cap.err.count("] iteration ") == 6
    uid = cap.out.split()[1]

    db = SqlRunDB(settings.db_url)
    parent = db.get_run(uid)
    assert parent.results["score"] == 0
    assert db.get_run(uid, parent.best_iteration or 0).params["x"] == 2
    assert db.get_run(uid, parent.best_iteration or 0).params["y"] == 1

    assert cli("get", "runs", "--project", "clip") == 0
    out = capsys.readouterr().out
    assert uid in out and single["uid"] in out and out.startswith("UID")

    assert cli("get", "run", uid, "--json") == 0
    detail = json.loads(capsys.readouterr().out)
    assert len(detail["iterations"]) == 6
    assert {a["key"] for a in detail["artifacts"]} >= {"iteration_results", "iteration_plot"}

    assert cli("get", "artifacts", "--run", uid, "--kind", "table") == 0
    out = capsys.readouterr().out
    assert f"store://clip/{uid}/iteration_results" in out

    dest = tmp_path / "dl"
    dest.mkdir()
    assert (
        cli("artifact", "download", f"store://clip/{uid}/iteration_results", "-o", str(dest)) == 0
    )
    got = dest / "iteration_results.csv"
    assert got.read_text().startswith("iteration,state,")


def test_cli_errors(settings: TrackingSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("run", ref("noop"), "--param", "novalue") == 2
    assert "must look like KEY=VALUE" in capsys.readouterr().err
    # containers run FILE.py:handler targets only (tests/integration/test_runs_platforms.py)
    assert cli("run", "some_module:noop", "--runner", "container") == 2
    assert "--local" in capsys.readouterr().err
    # --platform was the flag's name before 0.2 (deploy's word for a different thing)
    assert cli("run", "some_module:noop", "--platform", "container") == 2
    err = capsys.readouterr().err
    assert "--platform is now --runner container" in err and "--runner subprocess" in err
    assert cli("get", "run", "doesnotexist") == 2
    assert "not found" in capsys.readouterr().err
    assert cli("run", ref("sweep"), "--param", "fail_on=1", "--hyper", "x=1") == 1
    assert "state=error" in capsys.readouterr().out


def test_kubernetes_only_options(
    settings: TrackingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    # --timeout is the kubernetes Job's deadline: the other runners refuse it, never ignore it.
    assert cli("run", ref("noop"), "--timeout", "60") == 2
    assert "--timeout is the kubernetes runner's Job deadline" in capsys.readouterr().err
    assert cli("run", ref("noop"), "--timeout", "60", "--runner", "subprocess") == 2
    assert "Job deadline" in capsys.readouterr().err
    assert cli("run", ref("noop"), "--runner", "kubernetes", "--parallel", "0") == 2
    assert "greater than or equal to 1" in capsys.readouterr().err
    # --runner kubernetes reports to a controller: without one it stops before building.
    assert cli("run", ref("sweep"), "--runner", "kubernetes", "--hyper-param", "x=1,2") == 2
    err = capsys.readouterr().err
    assert "needs TICKRUN_CONTROLLER_URL" in err and "Traceback" not in err
    # --hyper-param is --hyper
    assert cli("run", ref("sweep"), "--hyper-param", "x=1,3", "--selector", "max.score") == 0
    assert "result best_iteration = 1" in capsys.readouterr().out
