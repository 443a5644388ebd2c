"""auto_trainer 1.2.0 on the shipped hourly BTCUSDT bars: the same model, metrics, split,
artifacts and logged test set as 1.1.0 (it only does less work around the fit), for a time
split with and without validation, a random split, both model kinds and the plots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.unit.hub.conftest import FakeContext, FrameItem, same_outputs_cases
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

new = import_function("hub://auto_trainer:1.2.0").module()
old = import_function("hub://auto_trainer:1.1.0").module()
mf = import_function("hub://market_features:1").module()


@pytest.fixture(scope="module")
def feats() -> pd.DataFrame:
    return mf.compute_features(pd.read_csv(market_data()).iloc[-6000:].reset_index(drop=True))


def _train(module: Any, df: pd.DataFrame, **params: Any) -> FakeContext:
    context = FakeContext()
    module.train(context, dataset=FrameItem(df), **params)
    return context


def _predictions(context: FakeContext, x: pd.DataFrame) -> np.ndarray:
    return np.asarray(context.models["model"]["model"].predict_proba(x))


@same_outputs_cases
def test_the_same_results_model_and_artifacts_as_1_1(feats: pd.DataFrame, params: Any) -> None:
    a, b = _train(old, feats, **params), _train(new, feats, **params)
    assert set(a.results) == set(b.results)
    for key, value in a.results.items():
        if isinstance(value, float):
            assert b.results[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        else:
            assert b.results[key] == value, key
    assert "auc" in b.results and "baseline_log_loss" in b.results
    if params.get("validation_size"):
        assert "validation_auc" in b.results
    x = feats[a.models["model"]["feature_names"]]
    assert b.models["model"]["feature_names"] == a.models["model"]["feature_names"]
    np.testing.assert_array_equal(_predictions(a, x), _predictions(b, x))
    assert {k: v for k, v in b.models["model"].items() if k != "model"} == {
        k: v for k, v in a.models["model"].items() if k != "model"
    }
    pd.testing.assert_frame_equal(a.datasets["test_set"], b.datasets["test_set"])
    assert set(a.artifacts) == set(b.artifacts) == ({
        "confusion-matrix", "roc-curves", "calibration-curve", "feature-importance"
    } if params["plots"] else set())  # fmt: skip


def test_rows_are_sliced_when_consecutive_and_taken_otherwise() -> None:
    frame = pd.DataFrame({"v": np.arange(10.0)}, index=np.arange(10) * 3)
    sliced = new.take_rows(frame, np.arange(2, 7))
    assert np.shares_memory(sliced["v"].to_numpy(), frame["v"].to_numpy()), "a view, no copy"
    pd.testing.assert_frame_equal(sliced, frame.iloc[np.arange(2, 7)])
    for rows in ([1, 3, 4], [4, 3, 2], [2, 2, 3], []):
        pd.testing.assert_frame_equal(new.take_rows(frame, np.asarray(rows, dtype=int)),
                                      frame.iloc[np.asarray(rows, dtype=int)])  # fmt: skip
