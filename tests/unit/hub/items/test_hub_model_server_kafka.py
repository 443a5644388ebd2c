"""model_server 1.1's Kafka path in process: a features message (market_features' streaming
shape) → probability and signal equal to the model object's predict_proba and the thresholds."""

from __future__ import annotations

import asyncio
import json
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

ms = import_function("hub://model_server:1.1").module()
mf = import_function("hub://market_features:1.2").module()


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    bars = pd.read_csv(market_data()).iloc[-2000:]
    frame = mf.compute_features(bars, windows="6,24")
    x = frame[mf.feature_columns(frame)]
    frame["open_ms"] = pd.to_datetime(frame["timestamp"], utc=True).astype("int64") // 10**6
    frame["close"] = bars.set_index("timestamp").loc[frame["timestamp"], "close"].to_numpy()
    return frame, x


def _kafka(server: Any, body: Any, rule: Any) -> Any:
    ctx = SimpleNamespace(user_data=SimpleNamespace(server=server, signal_rule=rule))
    event = SimpleNamespace(
        path="",
        method="POST",
        body=body,
        content_type="application/json",
        id="t/0/1",
        trigger=SimpleNamespace(kind="kafka-cluster", name="features"),
    )
    return asyncio.run(ms.handler(ctx, event))


def _message(frame: pd.DataFrame, x: pd.DataFrame, i: int) -> dict[str, Any]:
    features = x.iloc[i].to_dict()
    shuffled = dict(reversed(list(features.items())))  # key order must not matter
    return {
        "symbol": "BTCUSDT",
        "open_time": int(frame["open_ms"].iloc[i]),
        "close": float(frame["close"].iloc[i]),
        "features": shuffled,
    }


@pytest.mark.parametrize("kind", ["pipeline-lr", "xgb"])
def test_features_messages_give_the_models_probability_and_signal(data, kind: str) -> None:
    frame, x = data
    y = frame["label"]
    model = (
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
        if kind == "pipeline-lr"
        else XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)
    )
    server = ms.ModelServer(ms.Predictor(model, list(x.columns)), name="btc")
    expected = model.predict_proba(x.iloc[:60])[:, 1]
    rule = ms.SignalRule(0.52, 0.48)
    outs = [_kafka(server, _message(frame, x, i), rule) for i in range(60)]
    np.testing.assert_allclose([o["probability"] for o in outs], expected, rtol=1e-6)
    want = [1 if p > 0.52 else -1 if p < 0.48 else 0 for p in (o["probability"] for o in outs)]
    assert [o["signal"] for o in outs] == want
    assert {o["signal"] for o in outs} != {0}, "the sample should move the signal"
    assert [o["open_time"] for o in outs] == frame["open_ms"].iloc[:60].tolist()
    assert set(outs[0]) == {"symbol", "open_time", "close", "probability", "signal"}


def test_long_only_by_default_and_bad_messages_raise(data) -> None:
    frame, x = data
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, frame["label"])
    server = ms.ModelServer(ms.Predictor(model, list(x.columns)))
    long_only = ms.SignalRule()
    signals = {_kafka(server, _message(frame, x, i), long_only)["signal"] for i in range(200)}
    assert signals <= {0, 1}
    for bad in (
        b"garbage",
        {"symbol": "X"},
        {"features": {"nope": 1.0}, "symbol": "X", "open_time": 1, "close": 1.0},
    ):
        with pytest.raises(ValueError):
            _kafka(server, bad, long_only)
    with pytest.raises(ValueError):
        ms.SignalRule(0.4, 0.6)


def test_http_still_answers_as_in_1_0(data) -> None:
    frame, x = data
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, frame["label"])
    server = ms.ModelServer(ms.Predictor(model, list(x.columns)))
    ctx = SimpleNamespace(user_data=SimpleNamespace(server=server))
    event = SimpleNamespace(
        path="/invocations",
        method="POST",
        content_type="application/json",
        id="r",
        body={"dataframe_records": x.iloc[:3].to_dict("records")},
        trigger=SimpleNamespace(kind="http", name="http"),
    )
    out = asyncio.run(ms.handler(ctx, event))
    assert out["predictions"] == model.predict(x.iloc[:3]).tolist()


@pytest.mark.parametrize("kind", ["pipeline-lr", "xgb"])
def test_a_null_feature_is_read_as_nan(data, kind: str) -> None:
    """market_features 1.2 sends a NaN feature as null (strict JSON): the server reads it as
    NaN, so the message is refused as non-finite on every model path, as a JSON NaN is."""
    frame, x = data
    model = (
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, frame["label"])
        if kind == "pipeline-lr"
        else XGBClassifier(n_estimators=20, max_depth=3).fit(x, frame["label"])
    )
    server = ms.ModelServer(ms.Predictor(model, list(x.columns)))
    assert server.predictor.row_scorer is not None  # the one-row path a Kafka message takes
    rule = ms.SignalRule()
    message = _message(frame, x, 5)
    assert _kafka(server, json.dumps(message, allow_nan=False).encode(), rule)["probability"] > 0
    name = "volume_ratio_6"
    null = {**message, "features": {**message["features"], name: None}}
    nan = {**message, "features": {**message["features"], name: math.nan}}
    for body in (json.dumps(null, allow_nan=False).encode(), null, nan):
        with pytest.raises(ValueError, match=r"finite numbers \(no NaN/inf\)"):
            _kafka(server, body, rule)
