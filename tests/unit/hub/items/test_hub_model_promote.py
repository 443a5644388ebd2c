"""model_promote 1.0.0 on the shipped BTCUSDT bars: market_features 1.2 → two auto_trainer 1.1
models registered as versions → promotion runs judged by a backtest net of fees on later bars
(or by a logged metric), with the aliases read back from the registry afterwards.

The clearly better model is built, not hoped for: it is trained with ``leak``, the bar's own
forward return, as a feature, beside a model trained on shuffled labels; the evaluation bars
carry ``leak`` too, so its backtest wins by construction, which is what a test of the rule
needs (whether a real model beats another is the backtest's business, tested elsewhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tickrun
from tests.support.registry_contract import logged_model
from tickrun.functions.runs import DataItem, SqlRunDB, run_function
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

LOGIT = {"model_class": "sklearn.linear_model.LogisticRegression", "scale": True, "plots": False}
TRAIN_ROWS = 1900
PURGE = 24  # bars between the training rows and the evaluation bars


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TICKRUN_HOME: its run DB is the configured one."""
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


@pytest.fixture
def models(home: Path, tmp_path: Path) -> dict[str, Any]:
    """The evaluation dataset (later bars, with close) and the two trained runs."""
    bars = pd.read_csv(market_data()).iloc[-3000:]
    bars_path = tmp_path / "bars.csv"
    bars.to_csv(bars_path, index=False)
    feats = import_function("hub://market_features:1.2").run(
        inputs={"dataset": str(bars_path)}, progress=False
    )
    assert feats.state == "completed", feats.error
    df = DataItem(feats.outputs["features"]).as_df().assign(leak=lambda d: d["future_return"])
    train, evaluation = df.iloc[:TRAIN_ROWS], df.iloc[TRAIN_ROWS + PURGE :]
    shuffled = train.assign(label=np.random.default_rng(7).permutation(train["label"].to_numpy()))
    close = bars.assign(timestamp=pd.to_datetime(bars["timestamp"], utc=True))
    evaluation = evaluation.assign(timestamp=pd.to_datetime(evaluation["timestamp"], utc=True))
    evaluation = evaluation.merge(close[["timestamp", "close"]], on="timestamp")
    paths = {}
    for name, frame in (("good", train), ("shuffled", shuffled), ("eval", evaluation)):
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    runs = {}
    for name in ("good", "shuffled"):
        run = import_function("hub://auto_trainer:1.1.0").run(
            "train", params=LOGIT, inputs={"dataset": str(paths[name])}, progress=False
        )
        assert run.state == "completed", run.error
        runs[name] = run
    assert runs["good"].results["auc"] > runs["shuffled"].results["auc"] + 0.2
    return {"eval": str(paths["eval"]), "runs": runs, "eval_rows": len(evaluation)}


def _promote(models: dict[str, Any], **params: Any) -> Any:
    run = import_function("hub://model_promote").run(
        params={"model": "btc", **params}, inputs={"dataset": models["eval"]}, progress=False
    )
    assert run.state == "completed", run.error
    return run


def _aliases() -> dict[str, int]:
    return tickrun.get_registered_model("btc").aliases


def _backtest(models: dict[str, Any], version: int) -> dict[str, Any]:
    """The backtest item run on its own over the same bars and costs, as the reference."""
    run = import_function("hub://backtest:1.2.0").run(
        params={"model": f"models:/btc/{version}", "null_paths": 1, "fee_bp": 10},
        inputs={"dataset": models["eval"]},
        progress=False,
    )
    assert run.state == "completed", run.error
    return run.results


def test_first_better_and_worse_challengers(models: dict[str, Any]) -> None:
    runs = models["runs"]
    # No champion yet: the (weak) challenger becomes champion.
    v1 = tickrun.register_model(runs["shuffled"].outputs["model"], "btc", aliases=["challenger"])
    first = _promote(models)
    assert first.results["promoted"] is True
    assert first.results["champion_version"] is None
    assert first.results["challenger_version"] == v1.version == 1
    assert first.results["champion_metric"] is None
    assert "no champion" in first.results["reason"]
    assert first.record.labels["promoted"] == "true"
    assert _aliases() == {"challenger": 1, "champion": 1}

    # The leak-fed model beats it on net return after fees; the alias moves, old one kept.
    v2 = tickrun.register_model(runs["good"].outputs["model"], "btc", aliases=["challenger"])
    better = _promote(models, fee_bp=10)
    res = better.results
    assert (res["promoted"], res["champion_version"], res["challenger_version"]) == (
        True,
        1,
        v2.version,
    )
    assert res["new_champion_version"] == 2
    # The figures compared are the backtest item's own, on the same bars and costs.
    assert res["challenger_metric"] == pytest.approx(_backtest(models, 2)["net_return"])
    assert res["champion_metric"] == pytest.approx(_backtest(models, 1)["net_return"])
    assert res["challenger_metric"] > res["champion_metric"]
    assert res["improvement"] == pytest.approx(res["challenger_metric"] - res["champion_metric"])
    assert "beats" in res["reason"] and "does not" not in res["reason"]
    assert _aliases() == {"challenger": 2, "champion": 2, "previous-champion": 1}
    assert (
        tickrun.get_model_version("models:/btc@champion").model_uri
        == (runs["good"].outputs["model"])
    )

    # The shuffled-label model as challenger again: worse, nothing moves.
    tickrun.set_alias("btc", "challenger", 1)
    worse = _promote(models)
    res = worse.results
    assert (res["promoted"], res["champion_version"], res["challenger_version"]) == (False, 2, 1)
    assert res["challenger_metric"] < res["champion_metric"] and res["improvement"] < 0
    assert res["new_champion_version"] == 2 and "does not beat" in res["reason"]
    assert worse.record.labels["promoted"] == "false"
    assert _aliases() == {"challenger": 1, "champion": 2, "previous-champion": 1}

    # Same version under both aliases: no comparison, no move.
    tickrun.set_alias("btc", "challenger", 2)
    same = _promote(models)
    assert same.results["promoted"] is False and "already champion" in same.results["reason"]
    assert same.results["challenger_metric"] is None


def test_logged_metric_direction_and_margin(models: dict[str, Any]) -> None:
    runs = models["runs"]
    tickrun.register_model(runs["shuffled"].outputs["model"], "btc", aliases=["champion"])
    tickrun.register_model(runs["good"].outputs["model"], "btc", aliases=["challenger"])
    auc = {k: runs[k].results["auc"] for k in runs}
    gap = auc["good"] - auc["shuffled"]

    # A margin larger than the gain: not promoted, though the challenger is better.
    held = _promote(models, metric="auc", min_improvement=gap + 0.01)
    res = held.results
    assert res["promoted"] is False and res["improvement"] == pytest.approx(gap)
    assert (res["challenger_metric"], res["champion_metric"]) == pytest.approx(
        (auc["good"], auc["shuffled"])
    )
    assert _aliases() == {"champion": 1, "challenger": 2}

    # log_loss, lower is better, under a custom previous alias.
    won = _promote(models, metric="log_loss", direction="min", previous_alias="retired")
    res = won.results
    assert res["promoted"] is True
    assert res["improvement"] == pytest.approx(
        runs["shuffled"].results["log_loss"] - runs["good"].results["log_loss"]
    )
    assert _aliases() == {"champion": 2, "challenger": 2, "retired": 1}


def test_refusals_leave_the_aliases_alone(models: dict[str, Any]) -> None:
    runs = models["runs"]
    tickrun.register_model(runs["shuffled"].outputs["model"], "btc", aliases=["champion"])
    tickrun.register_model(runs["good"].outputs["model"], "btc", aliases=["challenger"])
    promote = import_function("hub://model_promote")
    for params, message in (
        ({"metric": "sortino_of_dreams"}, "logged no metric"),
        ({"metric": "backtest.no_such_result"}, "no result"),
        ({"direction": "up"}, "direction"),
        ({"challenger": "nobody"}, "is not set"),
    ):
        run = promote.run(
            params={"model": "btc", **params}, inputs={"dataset": models["eval"]}, progress=False
        )
        assert run.state == "error" and message in (run.error or ""), (params, run.error)
    assert _aliases() == {"champion": 1, "challenger": 2}


def test_walk_forward_judges_each_versions_estimator(models: dict[str, Any]) -> None:
    """walk_forward_splits > 1 refits each version's estimator (from its lineage) on purged
    folds of the evaluation bars: a logistic regression over the leak beats a prior-only one."""
    dummy = import_function("hub://auto_trainer:1.1.0").run(
        "train",
        params={"model_class": "sklearn.dummy.DummyClassifier", "plots": False},
        inputs={"dataset": models["eval"]},
        progress=False,
    )
    assert dummy.state == "completed", dummy.error
    tickrun.register_model(dummy.outputs["model"], "btc", aliases=["champion"])
    tickrun.register_model(models["runs"]["good"].outputs["model"], "btc", aliases=["challenger"])
    res = _promote(models, walk_forward_splits=3).results
    assert res["promoted"] is True and _aliases()["champion"] == 2
    reference = import_function("hub://backtest:1.2.0").run(
        params={
            "walk_forward_splits": 3,
            "model_class": "sklearn.linear_model.LogisticRegression",
            "null_paths": 1,
            "shuffled_label_control": False,
        },
        inputs={"dataset": models["eval"]},
        progress=False,
    )
    assert reference.state == "completed", reference.error
    assert res["challenger_metric"] == pytest.approx(reference.results["net_return"])
    assert res["challenger_metric"] > res["champion_metric"]


def test_aliases_move_in_the_jobs_own_run_db(home: Path, tmp_path: Path) -> None:
    """A job tracked in another DB than the configured one reads and moves that DB's aliases."""
    other = SqlRunDB(f"sqlite:///{tmp_path / 'other.db'}")
    store = str(tmp_path / "other-artifacts")
    for uid in ("r1", "r2"):
        tickrun.register_model(logged_model(other, store, uid), "btc", db=other)
    tickrun.set_alias("btc", "challenger", 2, db=other)
    run = run_function(
        import_function("hub://model_promote").handler("promote"),
        params={"model": "btc", "metric": "auc"},
        db=other,
        artifact_path=tmp_path / "job-artifacts",
        progress=False,
    )
    assert run.state == "completed", run.error
    assert run.results["promoted"] is True and run.results["challenger_version"] == 2
    assert tickrun.get_registered_model("btc", db=other).aliases == {
        "challenger": 2,
        "champion": 2,
    }
    assert tickrun.list_models() == [], "the configured DB's registry is untouched"
    other.close()
