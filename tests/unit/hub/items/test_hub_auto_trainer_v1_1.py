"""auto_trainer 1.1.0 on the shipped hourly BTCUSDT bars: targets never reach the model, a time
series is split in time and purged by the label horizon, a random split of one must be asked for
by name, metadata targets/horizon are honoured through tracked runs, metrics come beside
baselines, and a validation split reports validation_* metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from tickrun.functions.runs import load_model, run_function
from tickrun.hub import Hub, import_function
from tickrun.hub.catalogue import HubDeprecationWarning
from tickrun.hub.sampledata import market_data

at = import_function("hub://auto_trainer:1.1.0").module()
with pytest.warns(HubDeprecationWarning, match="auto_trainer:1.0.0 is deprecated"):
    old = import_function("hub://auto_trainer:1.0.0").module()  # what the audit measured
# the newest market_features 1.y (1.2.0 logs the targets/time/horizon metadata; 1.1.0 does not)
mf = import_function("hub://market_features:1").module()
XGB = {"model_class": "xgboost.XGBClassifier", "CLASS_n_estimators": 30, "CLASS_max_depth": 3}
LOGIT = {"model_class": "sklearn.linear_model.LogisticRegression", "scale": True}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_csv(market_data()).iloc[-6000:].reset_index(drop=True)


@pytest.fixture(scope="module")
def feats(bars: pd.DataFrame) -> pd.DataFrame:
    return mf.compute_features(bars)


@pytest.fixture(scope="module")
def feats24(bars: pd.DataFrame) -> pd.DataFrame:
    return mf.compute_features(bars, horizon=24)


@pytest.fixture
def tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _model_features(model: Any) -> list[str]:
    est = at.final_estimator(model)
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        names = est.get_booster().feature_names
    return [str(n) for n in names]


def _times(results: dict[str, Any], key: str) -> pd.Timestamp:
    return pd.Timestamp(results[key])


@pytest.mark.parametrize("params", [LOGIT, XGB], ids=["logistic", "xgboost"])
def test_default_never_sees_a_target_column(feats, fake_context, frame_item, params) -> None:
    df = feats.assign(
        fwd_ret_3=feats["future_return"] * 3, Forward_vol=feats["future_return"].abs()
    )
    at.train(fake_context, dataset=frame_item(df), plots=False, **params)
    model = fake_context.models["model"]
    seen = _model_features(model["model"])
    assert seen == model["feature_names"] == mf.feature_columns(feats)
    targets = {"label", "future_return", "fwd_ret_3", "Forward_vol", "timestamp"}
    assert not targets & set(seen)
    r = fake_context.results
    assert r["dropped_target_columns"] == ["Forward_vol", "future_return", "fwd_ret_3"]
    why = dict(fake_context.logger.records)["target columns dropped from the features"]["columns"]
    assert why["future_return"] == "market_features target"
    assert why["fwd_ret_3"].startswith("forward-looking name")
    # an hourly up/down model is near a coin; 1.0.0's defaults on the same frame score the leak
    assert 0.4 < r["auc"] < 0.62
    leaky = type(fake_context)()
    old.train(leaky, dataset=frame_item(df), plots=False, **params)
    assert leaky.results["auc"] > 0.95


def test_keep_columns_overrides_the_name_rule_only(feats, fake_context, frame_item) -> None:
    df = feats.assign(future_funding=0.0001 * np.sign(feats["ret_1"]))  # known in advance
    at.train(
        fake_context, dataset=frame_item(df), keep_columns="future_funding", plots=False, **LOGIT
    )
    seen = fake_context.models["model"]["feature_names"]
    assert "future_funding" in seen and "future_return" not in seen
    for target in ("future_return", "label"):  # market_features' targets and labels stay out
        with pytest.raises(ValueError, match=f"keep_columns cannot keep \\['{target}'\\]"):
            at.train(fake_context, dataset=frame_item(df), keep_columns=target, **LOGIT)


def test_24_bar_label_is_split_in_time_and_purged(feats24, fake_context, frame_item) -> None:
    at.train(fake_context, dataset=frame_item(feats24), plots=False, **XGB)
    r = fake_context.results
    # market_features 1.1 logs no horizon: it is read off future_return (1.2 also logs it)
    assert r["split"] == "time" and r["purge_bars"] == 24 and r["purged_rows"] == 24
    bar = pd.to_datetime(feats24["timestamp"]).diff().median()
    assert bar == pd.Timedelta(hours=1)
    assert _times(r, "train_end") + 24 * bar < _times(r, "test_start")
    test_set = fake_context.datasets["test_set"]
    n_test = round(len(feats24) * 0.2)
    assert test_set["timestamp"].tolist() == feats24["timestamp"].iloc[-n_test:].tolist()
    assert r["train_rows"] == len(feats24) - n_test - 24 and r["test_rows"] == n_test
    assert _times(r, "train_start") == pd.Timestamp(feats24["timestamp"].iloc[0])
    # the purge is what a parameter asks for when it is larger than the data's own horizon
    at.train(fake_context, dataset=frame_item(feats24), label_horizon=48, plots=False, **XGB)
    assert fake_context.results["purge_bars"] == 48


def test_random_split_of_a_time_series_needs_split_random(
    feats24, fake_context, frame_item
) -> None:
    item = frame_item(feats24)
    for implicit in ({"time_ordered": False}, {"stratify": True}):
        with pytest.raises(ValueError, match=r"split='random'") as err:
            at.train(fake_context, dataset=item, plots=False, **implicit, **LOGIT)
        assert "time index 'timestamp'" in str(err.value)
    with pytest.raises(ValueError, match="split must be one of"):
        at.train(fake_context, dataset=item, split="shuffle", **LOGIT)
    at.train(fake_context, dataset=item, split="random", plots=False, **LOGIT)
    r = fake_context.results
    assert r["split"] == "random" and r["purge_bars"] == 0
    test_times = fake_context.datasets["test_set"]["timestamp"]
    assert test_times.iloc[0] < feats24["timestamp"].iloc[len(feats24) // 2]  # not a suffix
    assert any("random split of a time series" in m for m, _ in fake_context.logger.records)
    # a plain table (no time index, no forward column) keeps the stratified random split
    plain = feats24.drop(columns=["timestamp", "future_return"]).sample(frac=1.0, random_state=3)
    at.train(fake_context, dataset=frame_item(plain), plots=False, **LOGIT)
    assert fake_context.results["split"] == "random"
    assert fake_context.results["purged_rows"] == 0
    # a time-like name over values that are no timestamps: refused, unless split=random
    tagged = plain.assign(date=np.where(plain["ret_1"] > 0, "up day", "down day"))
    with pytest.raises(ValueError, match="'date' does not parse as timestamps"):
        at.train(fake_context, dataset=frame_item(tagged), **LOGIT)
    at.train(fake_context, dataset=frame_item(tagged), split="random", plots=False, **LOGIT)
    assert "date" not in fake_context.models["model"]["feature_names"]


def test_time_ordered_and_a_given_test_set(feats24, fake_context, frame_item) -> None:
    at.train(fake_context, dataset=frame_item(feats24), time_ordered=True, plots=False, **LOGIT)
    assert fake_context.results["split"] == "time"  # 1.0's switch still works
    with pytest.raises(ValueError, match="contradicts"):
        at.train(fake_context, dataset=frame_item(feats24), time_ordered=True, split="random")
    train_part, test_part = feats24.iloc[:4000], feats24.iloc[4000:]
    at.train(
        fake_context,
        dataset=frame_item(train_part),
        test_set=frame_item(test_part),
        plots=False,
        **LOGIT,
    )
    r = fake_context.results
    # the last 24 training labels look into the test period: purged
    assert r["split"] == "given" and r["purge_bars"] == 24 and r["train_rows"] == 4000 - 24
    assert r["test_rows"] == len(test_part)
    assert _times(r, "train_end") + pd.Timedelta(hours=24) < _times(r, "test_start")
    with pytest.raises(ValueError, match="must come after the training rows"):
        at.train(fake_context, dataset=frame_item(test_part), test_set=frame_item(train_part))


def test_unsorted_or_duplicated_time_is_refused(feats, fake_context, frame_item) -> None:
    shuffled = feats.sample(frac=1.0, random_state=1)
    with pytest.raises(ValueError, match="not sorted by time"):
        at.train(fake_context, dataset=frame_item(shuffled), **LOGIT)
    doubled = pd.concat([feats.iloc[:100], feats.iloc[99:3000]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicated timestamps"):
        at.train(fake_context, dataset=frame_item(doubled), **LOGIT)


def test_time_index_is_found_by_dtype_index_name_or_epoch(feats) -> None:
    ts = pd.to_datetime(feats["timestamp"], utc=True)
    name, times = at.time_index(feats.set_index(ts).drop(columns="timestamp"))
    assert name is None and times is not None and times.iloc[0] == ts.iloc[0]
    millis = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    epoch_ms = feats.drop(columns="timestamp").assign(open_time=millis)
    name, times = at.time_index(epoch_ms)
    assert name == "open_time" and times.iloc[-1] == ts.iloc[-1]
    assert at.time_index(feats.drop(columns="timestamp")) == (None, None)
    plan = at.feature_plan(epoch_ms, "label", time_column="open_time")
    assert "open_time" not in plan.features  # a clock is not a feature


def test_metrics_beside_baselines(feats, fake_context, frame_item) -> None:
    at.train(fake_context, dataset=frame_item(feats), plots=True, **XGB)
    r = fake_context.results
    n_train, n_test = r["train_rows"], r["test_rows"]
    y_train = feats["label"].to_numpy()[:n_train]
    test_set = fake_context.datasets["test_set"]
    y = test_set["label"].to_numpy()
    model = fake_context.models["model"]["model"]
    proba = model.predict_proba(test_set[fake_context.models["model"]["feature_names"]])[:, 1]
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, proba))
    assert r["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert r["base_rate"] == pytest.approx(y.mean())
    majority = int(y_train.mean() >= 0.5)
    assert r["majority_accuracy"] == pytest.approx((y == majority).mean())
    p = y_train.mean()
    base_ll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert r["baseline_log_loss"] == pytest.approx(base_ll)
    assert {"accuracy", "f1_score", "precision_score", "recall_score"} <= set(r)
    assert len(y) == n_test
    for plot in ("confusion-matrix", "roc-curves", "calibration-curve", "feature-importance"):
        assert fake_context.artifacts[plot]["body"][:4] == b"\x89PNG"


def test_regressor_baseline_is_the_training_mean(feats24, fake_context, frame_item) -> None:
    at.train(
        fake_context,
        dataset=frame_item(feats24),
        model_class="xgboost.XGBRegressor",
        label_columns="future_return",
        CLASS_n_estimators=30,
        plots=False,
    )
    r = fake_context.results
    assert r["dropped_target_columns"] == ["label"]  # the updown label is a target too
    assert r["purge_bars"] == 24
    y = feats24["future_return"].to_numpy()
    mean = y[: r["train_rows"]].mean()
    test = y[-r["test_rows"] :]
    assert r["baseline_rmse"] == pytest.approx(np.sqrt(np.mean((test - mean) ** 2)))
    assert r["baseline_r2_score"] <= 0.0 and r["rmse"] > 0


def test_validation_split_reports_validation_metrics(feats24, fake_context, frame_item) -> None:
    at.train(fake_context, dataset=frame_item(feats24), validation_size=0.2, plots=False, **LOGIT)
    r = fake_context.results
    n = len(feats24)
    assert r["validation_rows"] == r["test_rows"] == round(n * 0.2)
    assert r["purged_rows"] == 48 and r["train_rows"] == n - 2 * round(n * 0.2) - 48
    bar = pd.Timedelta(hours=1)
    assert _times(r, "train_end") + 24 * bar < _times(r, "validation_start")
    assert _times(r, "validation_end") + 24 * bar < _times(r, "test_start")
    test_keys = {"accuracy", "auc", "log_loss", "base_rate", "majority_accuracy"}
    assert {f"validation_{k}" for k in test_keys} <= set(r)
    model = fake_context.models["model"]["model"]
    start = r["train_rows"] + 24
    rows = feats24.iloc[start : start + r["validation_rows"]]
    assert pd.Timestamp(rows["timestamp"].iloc[0]) == _times(r, "validation_start")
    x = rows[fake_context.models["model"]["feature_names"]]
    acc = (model.predict(x) == rows["label"].to_numpy()).mean()
    assert r["validation_accuracy"] == pytest.approx(acc)
    assert r["validation_auc"] != r["auc"]


def test_predict_and_evaluate_use_the_same_columns(feats, fake_context, frame_item) -> None:
    at.train(fake_context, dataset=frame_item(feats), plots=False, **LOGIT)
    model = fake_context.models["model"]["model"]
    at.predict(fake_context, model=model, dataset=frame_item(feats), proba=True)
    out = fake_context.datasets["prediction"]
    x = feats[mf.feature_columns(feats)]
    assert (out["predicted_label"].to_numpy() == model.predict(x)).all()
    at.evaluate(fake_context, model=model, dataset=frame_item(feats), plots=False)
    assert fake_context.results["base_rate"] == pytest.approx(feats["label"].mean())
    assert fake_context.results["accuracy"] == pytest.approx(
        (out["predicted_label"] == feats["label"]).mean()
    )


def _log_features(context: Any, bars_path: str) -> None:
    """A producer that logs what auto_trainer must not train on only in its metadata: the time
    column has a name no rule knows, and next_range looks 24 bars ahead under a neutral name."""
    bars = pd.read_csv(bars_path)
    df = mf.compute_features(bars, horizon=24).drop(columns="future_return")
    close = bars.set_index("timestamp")["close"]
    df["next_range"] = df["timestamp"].map((close.shift(-24) / close - 1.0).abs())
    df = df.rename(columns={"timestamp": "bar_open"})
    meta = {"targets": ["label", "next_range"], "time_column": "bar_open", "label_horizon_bars": 24}
    context.log_dataset("features", df, format="parquet", meta=meta)


def test_metadata_targets_and_horizon_through_tracked_runs(tracked: Path, bars) -> None:
    bars_path = tracked / "bars.csv"
    bars.to_csv(bars_path, index=False)
    produced = run_function(_log_features, params={"bars_path": str(bars_path)}, progress=False)
    assert produced.state == "completed", produced.error
    run = import_function("hub://auto_trainer:1.1.0").run(
        "train",
        params={"plots": False, **XGB},
        inputs={"dataset": produced.outputs["features"]},
        progress=False,
    )
    assert run.state == "completed", run.error
    assert run.record.labels["hub.version"] == "1.1.0"
    r = run.results
    assert r["dropped_target_columns"] == ["next_range"]
    # no forward-named column and an unknown time-column name: only the metadata says so
    assert r["split"] == "time" and r["purge_bars"] == 24
    assert _times(r, "train_end") + pd.Timedelta(hours=24) < _times(r, "test_start")
    model, info = load_model(run.outputs["model"])
    assert "next_range" not in _model_features(model)
    assert "next_range" not in info.feature_names and "bar_open" not in info.feature_names
    logged = run.artifact_record("test_set").meta
    assert logged["time_column"] == "bar_open" and logged["label_horizon_bars"] == 24
    assert set(logged["targets"]) == {"label", "next_range"}


def test_market_features_to_auto_trainer_defaults(tracked: Path, bars) -> None:
    bars_path = tracked / "bars.csv"
    bars.to_csv(bars_path, index=False)
    feats = import_function("hub://market_features:1").run(
        params={"horizon": 24}, inputs={"dataset": str(bars_path)}, progress=False
    )
    assert feats.state == "completed", feats.error
    run = import_function("hub://auto_trainer:1.1").run(
        "train", params={"plots": False, **LOGIT}, inputs={"dataset": feats.outputs["features"]}
    )
    assert run.state == "completed", run.error
    assert run.record.labels["hub.version"] == "1.1.0"
    r = run.results
    assert "future_return" in r["dropped_target_columns"] and r["purge_bars"] == 24
    _model, info = load_model(run.outputs["model"])
    assert not {"label", "future_return", "timestamp"} & set(info.feature_names)
    assert {"auc", "log_loss", "base_rate", "majority_accuracy", "baseline_log_loss"} <= set(r)


def test_a_copy_outside_the_package_loads_its_files_and_trains_alike(
    tmp_path: Path, feats, fake_context, frame_item
) -> None:
    """A private or remote hub's cached copy is imported by path, not as a package: the files
    item.yaml lists load from beside auto_trainer.py, and it trains exactly as the bundled item."""
    src = import_function("hub://auto_trainer:1.1.0").folder
    dest = tmp_path / "hub" / "auto_trainer" / "1.1.0"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    copy = Hub([tmp_path / "hub"], bundled=False).import_function("hub://auto_trainer:1.1.0")
    module = copy.module()
    assert not module.__name__.startswith("tickrun.hub.items")
    assert Path(module.__file__).parent == dest
    for part in (module.columns, module.timeseries, module.estimator, module.plots):
        assert Path(part.__file__).parent == dest
        assert not part.__name__.startswith("tickrun.hub.items")
    df = feats.iloc[-1500:].reset_index(drop=True)
    bundled_context = type(fake_context)()
    for item, context in ((module, fake_context), (at, bundled_context)):
        item.train(context, dataset=frame_item(df), validation_size=0.2, **LOGIT)
    r = fake_context.results
    assert r["split"] == "time" and r["purge_bars"] == 1 and r["validation_rows"] == 300
    assert r == bundled_context.results  # every metric, baseline and span
    assert set(fake_context.artifacts) == {
        "confusion-matrix",
        "roc-curves",
        "calibration-curve",
        "feature-importance",
    }
    assert all(a["body"].startswith(b"\x89PNG") for a in fake_context.artifacts.values())
    pd.testing.assert_frame_equal(
        fake_context.datasets["test_set"], bundled_context.datasets["test_set"]
    )
    trained = fake_context.models["model"]["model"]
    module.predict(fake_context, model=trained, dataset=frame_item(df), proba=True)
    predicted = fake_context.datasets["prediction"]
    assert fake_context.results["rows"] == len(df)
    expected = trained.predict(df[fake_context.models["model"]["feature_names"]])
    np.testing.assert_array_equal(predicted["predicted_label"], expected)
