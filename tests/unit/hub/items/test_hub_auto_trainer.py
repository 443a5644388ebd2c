from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tickrun.hub import import_function
from tickrun.hub.catalogue import HubDeprecationWarning
from tickrun.hub.sampledata import market_data

# 1.0.0 exactly: this file pins the old (deprecated) version's behaviour; 1.1 has its own tests.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", HubDeprecationWarning)
    at = import_function("hub://auto_trainer:1.0.0").module()
mf = import_function("hub://market_features").module()


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    bars = pd.read_csv(market_data()).iloc[-5000:]
    return mf.compute_features(bars, windows="6,24,72")


def test_kwarg_prefixes() -> None:
    cls, fit, pred = at.split_kwargs(
        {"CLASS_C": 0.5, "FIT_sample_weight": None, "PREDICT_validate_features": False}
    )
    assert cls == {"C": 0.5} and fit == {"sample_weight": None}
    assert pred == {"validate_features": False}
    with pytest.raises(TypeError, match="CLASS_"):
        at.split_kwargs({"C": 0.5})


def test_create_model_by_import_path() -> None:
    model = at.create_model("sklearn.linear_model.LogisticRegression", {"C": 0.25})
    assert model.C == 0.25
    assert type(at.create_model("XGBClassifier")).__module__.startswith("xgboost")
    with pytest.raises(ValueError, match="cannot import"):
        at.create_model("sklearn.linear_model.Nope")


def test_time_ordered_split_tests_on_the_latest_rows(features: pd.DataFrame) -> None:
    x, y = at.features_and_labels(features, "label", "future_return")
    assert "timestamp" not in x.columns and "future_return" not in x.columns
    _, x_test, _, _ = at.split(x, y, test_size=0.25, time_ordered=True)
    assert list(x_test.index) == list(x.index[-len(x_test) :])
    assert len(x_test) == round(len(x) * 0.25)


def test_stratified_split_keeps_the_class_balance(features: pd.DataFrame) -> None:
    x, y = at.features_and_labels(features, "label", "future_return")
    _, _, y_train, y_test = at.split(x, y, test_size=0.3, stratify=True, random_state=1)
    assert y_train["label"].mean() == pytest.approx(y_test["label"].mean(), abs=0.002)


@pytest.mark.parametrize(
    ("model_class", "extra"),
    [
        ("sklearn.linear_model.LogisticRegression", {"scale": True, "CLASS_C": 0.5}),
        ("xgboost.XGBClassifier", {"CLASS_n_estimators": 40, "CLASS_max_depth": 3}),
    ],
)
def test_train_classifier_on_btc_features(
    features, fake_context, frame_item, model_class, extra
) -> None:
    at.train(
        fake_context,
        dataset=frame_item(features),
        model_class=model_class,
        drop_columns="future_return",
        time_ordered=True,
        **extra,
    )
    r = fake_context.results
    for key in ("accuracy", "f1_score", "precision_score", "recall_score", "auc"):
        assert 0.0 <= r[key] <= 1.0, key
    # an hourly up/down model is barely better than a coin; far from it would mean a leak
    assert 0.4 < r["accuracy"] < 0.6 and 0.4 < r["auc"] < 0.62
    for plot in ("confusion-matrix", "roc-curves", "calibration-curve", "feature-importance"):
        art = fake_context.artifacts[plot]
        assert art["body"][:8] == b"\x89PNG\r\n\x1a\n" and art["kind"] == "plot"
    test_set = fake_context.datasets["test_set"]
    assert len(test_set) == round(len(features) * 0.2)
    assert (
        test_set["timestamp"].iloc[0]
        > features["timestamp"].iloc[len(features) - len(test_set) - 1]
    )
    logged = fake_context.models["model"]
    assert logged["framework"] == ("xgboost" if "xgb" in model_class else "sklearn")
    assert logged["metrics"]["accuracy"] == r["accuracy"]
    x = test_set[logged["feature_names"]]
    y = test_set["label"].to_numpy()
    assert (logged["model"].predict(x) == y).mean() == pytest.approx(r["accuracy"])
    if "CLASS_C" in extra:
        assert at.final_estimator(logged["model"]).C == 0.5


def test_train_regressor(features, fake_context, frame_item) -> None:
    at.train(
        fake_context,
        dataset=frame_item(features),
        model_class="xgboost.XGBRegressor",
        label_columns="future_return",
        drop_columns="label",
        time_ordered=True,
        CLASS_n_estimators=30,
        plots=False,
    )
    r = fake_context.results
    assert {"mae", "rmse", "r2_score"} <= set(r)
    assert r["rmse"] >= r["mae"] > 0
    assert r["rmse"] == pytest.approx(np.sqrt(r["mse"]))
    assert not fake_context.artifacts


def test_missing_label_is_a_clear_error(features, fake_context, frame_item) -> None:
    with pytest.raises(ValueError, match="not in the dataset"):
        at.train(fake_context, dataset=frame_item(features), label_columns="target")


def test_predict_and_evaluate_with_a_model_object(features, fake_context, frame_item) -> None:
    at.train(
        fake_context,
        dataset=frame_item(features),
        model_class="LogisticRegression",
        drop_columns="future_return",
        scale=True,
        plots=False,
    )
    model = fake_context.models["model"]["model"]
    at.predict(fake_context, model=model, dataset=frame_item(features), proba=True)
    out = fake_context.datasets["prediction"]
    x, _ = at.features_and_labels(features, "label", "future_return")
    assert (out["predicted_label"].to_numpy() == model.predict(x)).all()
    assert np.allclose(out["proba_1"], model.predict_proba(x)[:, 1])
    at.evaluate(fake_context, model=model, dataset=frame_item(features), plots=False)
    assert fake_context.results["accuracy"] == pytest.approx(
        (out["predicted_label"] == features["label"]).mean()
    )


def test_a_given_test_set_replaces_the_split(features, fake_context, frame_item) -> None:
    train_part, test_part = features.iloc[:4000], features.iloc[4000:]
    at.train(
        fake_context,
        dataset=frame_item(train_part),
        test_set=frame_item(test_part),
        model_class="xgboost.XGBClassifier",
        CLASS_n_estimators=10,
        drop_columns="future_return",
        plots=False,
    )
    logged = fake_context.datasets["test_set"]
    assert len(logged) == len(test_part)
    assert logged["timestamp"].tolist() == test_part["timestamp"].tolist()
    model = fake_context.models["model"]["model"]
    x = test_part[fake_context.models["model"]["feature_names"]]
    assert fake_context.results["accuracy"] == pytest.approx(
        (model.predict(x) == test_part["label"].to_numpy()).mean()
    )
