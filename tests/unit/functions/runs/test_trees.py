"""The numpy one-row scorer for XGBoost models agrees with XGBoost, or is not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from xgboost import XGBClassifier, XGBRegressor

from tickrun.functions.runs import trees
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

mf = import_function("hub://market_features").module()


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    bars = pd.read_csv(market_data()).iloc[-4000:]
    frame = mf.compute_features(bars, windows="6,24")
    return frame[mf.feature_columns(frame)], frame["label"].to_numpy()


def test_classifier_rows_match_predict_and_predict_proba(data) -> None:
    x, y = data
    model = XGBClassifier(n_estimators=120, max_depth=5).fit(x.iloc[:3000], y[:3000])
    score = trees.compile_xgboost_row(model, x.shape[1])
    assert score is not None
    held_out = x.iloc[3000:]  # rows the probe never saw
    labels = model.predict(held_out).tolist()
    p1 = model.predict_proba(held_out)[:, 1]
    got = [score(row) for row in held_out.to_numpy().tolist()]
    assert [g[0] for g in got] == labels
    np.testing.assert_allclose([g[1] for g in got], p1, rtol=1e-5, atol=1e-6)
    assert len(set(labels)) == 2, "both classes occur, so the check means something"


def test_regressor_rows_match_predict(data) -> None:
    x, _ = data
    target = x["ret_1"].shift(-1).fillna(0)
    model = XGBRegressor(n_estimators=60, max_depth=7).fit(x, target)
    score = trees.compile_xgboost_row(model, x.shape[1])
    assert score is not None
    rows = x.iloc[-500:]
    got = [score(row)[0] for row in rows.to_numpy().tolist()]
    np.testing.assert_allclose(got, model.predict(rows), rtol=1e-5, atol=1e-6)


def test_non_finite_rows_are_refused(data) -> None:
    x, y = data
    score = trees.compile_xgboost_row(XGBClassifier(n_estimators=5).fit(x, y), x.shape[1])
    assert score is not None
    row = x.iloc[0].tolist()
    row[2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        score(row)
    with pytest.raises(ValueError, match="finite"):
        score(row[:-1])


def test_models_it_cannot_reproduce_are_left_to_xgboost(data) -> None:
    x, y = data
    three = np.digitize(x["ret_1"], np.quantile(x["ret_1"], [0.33, 0.66]))
    multiclass = XGBClassifier(n_estimators=10).fit(x, three)
    assert trees.compile_xgboost_row(multiclass, x.shape[1]) is None
    stopped = XGBClassifier(n_estimators=200, early_stopping_rounds=3).fit(
        x.iloc[:3000], y[:3000], eval_set=[(x.iloc[3000:], y[3000:])], verbose=False
    )
    assert stopped.best_iteration + 1 < stopped.get_booster().num_boosted_rounds()
    assert trees.compile_xgboost_row(stopped, x.shape[1]) is None
    assert trees.compile_xgboost_row(object(), x.shape[1]) is None


def test_a_scorer_that_disagrees_is_dropped(data, monkeypatch) -> None:
    x, y = data
    model = XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)
    real = trees.flatten

    def shifted(booster):
        arrays, depth, base, objective = real(booster)
        return arrays, depth, base + 0.5, objective

    monkeypatch.setattr(trees, "flatten", shifted)
    assert trees.compile_xgboost_row(model, x.shape[1]) is None
