from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from xgboost import XGBClassifier

from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

describe = import_function("hub://describe").module()
bp = import_function("hub://batch_predict").module()
mf = import_function("hub://market_features").module()


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    bars = pd.read_csv(market_data()).iloc[-3000:]
    return mf.compute_features(bars, windows="6,24")


def test_describe_on_btc_features(features, fake_context, frame_item) -> None:
    describe.describe(fake_context, table=frame_item(features), label_column="label")
    stats = fake_context.datasets["summary"].set_index("column")
    assert stats.loc["ret_1", "mean"] == pytest.approx(features["ret_1"].mean())
    assert stats.loc["rsi_14", "max"] == pytest.approx(features["rsi_14"].max())
    assert stats.loc["timestamp", "unique"] == len(features)  # non-numeric columns are counted
    balance = fake_context.datasets["class_balance"].set_index("class")
    assert balance["count"].sum() == len(features)
    assert balance.loc["1", "fraction"] == pytest.approx(features["label"].mean())
    corr = fake_context.datasets["correlation"].set_index("column")
    assert corr.loc["ret_1", "log_ret_1"] > 0.99
    assert fake_context.results["rows"] == len(features)
    assert fake_context.results["minority_fraction"] <= 0.5
    for plot in ("histograms", "correlation-matrix", "class-balance"):
        assert fake_context.artifacts[plot]["body"][:4] == b"\x89PNG"


def test_describe_counts_missing_cells(fake_context, frame_item) -> None:
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": ["x", None, "y", "y"]})
    describe.describe(fake_context, table=frame_item(df), plots=False)
    assert fake_context.results["missing_cells"] == 2
    assert fake_context.results["missing_fraction"] == pytest.approx(2 / 8)
    assert not fake_context.artifacts


def test_batch_predict_in_chunks_matches_the_model(features, fake_context, frame_item) -> None:
    cols = mf.feature_columns(features)
    model = XGBClassifier(n_estimators=20, max_depth=3).fit(features[cols], features["label"])
    bp.batch_predict(
        fake_context,
        model=model,
        dataset=frame_item(features),
        proba=True,
        batch_size=700,
        keep_columns="timestamp",
    )
    out = fake_context.datasets["prediction"]
    assert list(out.columns[:2]) == ["timestamp", "predicted_label"]
    assert (out["predicted_label"].to_numpy() == model.predict(features[cols])).all()
    np.testing.assert_allclose(out["proba_1"], model.predict_proba(features[cols])[:, 1], rtol=1e-6)
    r = fake_context.results
    assert r["rows"] == len(features)
    assert r["agreement"] == pytest.approx(
        (model.predict(features[cols]) == features["label"]).mean()
    )


def test_batch_predict_needs_the_models_features(features, fake_context, frame_item) -> None:
    cols = mf.feature_columns(features)
    model = XGBClassifier(n_estimators=5).fit(features[cols], features["label"])
    with pytest.raises(ValueError, match="lacks feature"):
        bp.batch_predict(
            fake_context, model=model, dataset=frame_item(features.drop(columns=["rsi_14"]))
        )
