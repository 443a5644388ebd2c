"""``hub://`` as a run target of tracked runs (the hub's ``tickrun.run_targets`` plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickrun.functions.errors import HubError
from tickrun.functions.runs import run_function
from tickrun.hub.targets import resolve_target


@pytest.fixture
def env_hub(private_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKRUN_HUB_PATH", str(private_hub))
    monkeypatch.delenv("TICKRUN_HUB_URL", raising=False)
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    return private_hub


def test_a_target_names_item_version_and_handler(env_hub: Path) -> None:
    target = resolve_target("hub://toy:1.2#main")
    assert target.ref == "hub://toy:1.2#main" and target.name == "toy-main"
    assert target.labels["hub.version"] == "1.2.3" and target.labels["hub.handler"] == "main"
    assert target.check is not None
    with pytest.raises(HubError, match="has no parameter 'y'"):
        target.check({"y": 1}, {})


def test_run_function_runs_a_hub_target_labelled_like_the_hub_does(env_hub: Path) -> None:
    run = run_function("hub://toy:1.0", params={"x": 4}, progress=False)
    assert run.state == "completed", run.error
    assert run.results["version"] == "1.0.0" and run.results["x"] == 4
    assert run.name == "toy-main"
    assert run.record.labels["hub.item"] == "toy"
    assert run.record.labels["hub.source"] == str(env_hub)


def test_arguments_are_checked_before_a_run_is_recorded(env_hub: Path) -> None:
    from tickrun.functions.runs import open_db

    with pytest.raises(HubError, match="has no parameter 'nope'"):
        run_function("hub://toy", params={"nope": 1}, progress=False)
    assert open_db().list_runs(None) == []
