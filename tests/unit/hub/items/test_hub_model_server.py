"""model_server's request formats and predictions, in process (the HTTP path is covered by
tests/integration/test_hub_model_server.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

ms = import_function("hub://model_server:1.1").module()  # 1.2 answers with headers: its own test
mf = import_function("hub://market_features").module()


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    bars = pd.read_csv(market_data()).iloc[-3000:]
    frame = mf.compute_features(bars, windows="6,24")
    x = frame[mf.feature_columns(frame)]
    return x, frame["label"].to_numpy()


@pytest.fixture(scope="module", params=["pipeline-lr", "xgb-clf", "xgb-reg"])
def model(request, data) -> Any:
    x, y = data
    if request.param == "pipeline-lr":
        return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    if request.param == "xgb-clf":
        return XGBClassifier(n_estimators=30, max_depth=3).fit(x, y)
    return XGBRegressor(n_estimators=30, max_depth=3).fit(x, x["ret_1"].shift(-1).fillna(0))


def _server(model: Any) -> Any:
    return ms.ModelServer(ms.Predictor(model), name="btc")


def _call(
    server: Any, path: str, body: Any, content_type: str = "application/json", method: str = "POST"
) -> Any:
    ctx = SimpleNamespace(user_data=SimpleNamespace(server=server))
    event = SimpleNamespace(
        path=path, method=method, body=body, content_type=content_type, id="req-1"
    )
    return asyncio.run(ms.handler(ctx, event))


def test_every_format_gives_the_model_objects_predictions(model, data) -> None:
    x, _ = data
    rows = x.iloc[:7]
    expected = model.predict(rows).tolist()
    server = _server(model)
    cols = list(x.columns)
    shuffled = cols[::-1]  # column order in the request must not matter
    bodies = {
        "dataframe_split": {
            "dataframe_split": {"columns": shuffled, "data": rows[shuffled].to_numpy().tolist()}
        },
        "dataframe_records": {"dataframe_records": rows.to_dict("records")},
        "instances-lists": {"instances": rows.to_numpy().tolist()},
        "instances-records": {"instances": rows.to_dict("records")},
        "inputs-columns": {"inputs": rows.to_dict("list")},
        "inputs-lists": {"inputs": rows.to_numpy().tolist()},
    }
    for name, body in bodies.items():
        out = _call(server, "/invocations", body)
        np.testing.assert_allclose(out["predictions"], expected, rtol=1e-6, err_msg=name)
    csv_body = rows.to_csv(index=False).encode()
    out = _call(server, "/invocations", csv_body, content_type="text/csv")
    np.testing.assert_allclose(out["predictions"], expected, rtol=1e-6)
    nuclio = _call(server, "/", {"inputs": rows.to_dict("records"), "proba": True})
    np.testing.assert_allclose(nuclio["outputs"], expected, rtol=1e-6)
    assert nuclio["model_name"] == "btc" and nuclio["id"] == "req-1"
    if hasattr(model, "predict_proba"):
        np.testing.assert_allclose(nuclio["probabilities"], model.predict_proba(rows), rtol=1e-6)
    single = _call(server, "/predict", rows.iloc[0].to_dict())
    np.testing.assert_allclose(single["outputs"], expected[:1], rtol=1e-6)


def test_bad_requests_are_400_in_each_protocol(data) -> None:
    x, y = data
    server = _server(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))
    status, body = _call(
        server, "/invocations", {"dataframe_split": {"columns": ["a"], "data": [[1]]}}
    )
    assert status == 400 and body["error_code"] == "BAD_REQUEST"
    assert "missing feature" in body["message"]
    status, body = _call(server, "/invocations", {"inputs": [[1.0]], "instances": [[1.0]]})
    assert status == 400 and "exactly one" in body["message"]
    status, body = _call(server, "/", {"inputs": [[float("nan")] * x.shape[1]]})
    assert status == 400 and "finite" in body["error"]
    status, body = _call(server, "/", {"inputs": [["x"] * x.shape[1]]})
    assert status == 400 and "numbers" in body["error"]
    status, body = _call(server, "/", {"inputs": [[1.0, 2.0]]})
    assert status == 400 and f"expected {x.shape[1]} features" in body["error"]


def test_get_routes(data) -> None:
    x, y = data
    server = _server(XGBClassifier(n_estimators=5).fit(x, y))
    assert _call(server, "/ping", None, method="GET") == "\n"
    info = _call(server, "/", None, method="GET")
    assert info["framework"] == "xgboost" and info["features"] == list(x.columns)
    assert info["classes"] == [0, 1]


def test_linear_models_are_compiled_and_checked(data) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression

    x, y = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    predictor = ms.Predictor(pipe)
    assert predictor.compiled
    matrix = x.to_numpy()
    assert predictor.predict(matrix) == pipe.predict(x).tolist()
    np.testing.assert_allclose(predictor.predict_proba(matrix), pipe.predict_proba(x), rtol=1e-9)
    reg = LinearRegression().fit(x, x["ret_1"].shift(-1).fillna(0))
    reg_predictor = ms.Predictor(reg)
    assert reg_predictor.compiled
    np.testing.assert_allclose(reg_predictor.predict(matrix), reg.predict(x), rtol=1e-9)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    fallback = ms.Predictor(forest)
    assert not fallback.compiled  # no numpy twin: scikit-learn does the work
    assert fallback.predict(matrix) == forest.predict(x).tolist()


def test_a_compiled_twin_that_disagrees_is_not_used(data, monkeypatch) -> None:
    x, y = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    real = ms._compile_final

    def broken(est):
        predict, _proba = real(est)
        return (lambda m: 1 - predict(m)), None

    monkeypatch.setattr(ms, "_compile_final", broken)
    predictor = ms.Predictor(pipe)
    assert not predictor.compiled
    assert predictor.predict(x.to_numpy()) == pipe.predict(x).tolist()


def test_one_row_requests_use_the_checked_python_scorer(data) -> None:
    x, y = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    server = _server(pipe)
    assert server.predictor.row_scorer is not None
    rows = x.iloc[:300]
    expected = pipe.predict(rows).tolist()
    proba = pipe.predict_proba(rows)
    for i, row in enumerate(rows.to_numpy().tolist()):
        out = _call(server, "/", {"inputs": [row], "proba": True})
        assert out["outputs"] == [expected[i]]
        np.testing.assert_allclose(out["probabilities"][0], proba[i], rtol=1e-9)
    status, body = _call(server, "/", {"inputs": [[None] * x.shape[1]]})
    assert status == 400 and "numbers" in body["error"]


def test_a_python_scorer_that_disagrees_is_not_used(data, monkeypatch) -> None:
    x, y = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    real = ms.compile_row

    def broken(model):
        score = real(model)
        return lambda row: (1 - score(row)[0], score(row)[1])

    monkeypatch.setattr(ms, "compile_row", broken)
    server = _server(pipe)
    assert server.predictor.row_scorer is None
    row = x.iloc[[5]]
    assert (
        _call(server, "/", {"inputs": row.to_numpy().tolist()})["outputs"]
        == pipe.predict(row).tolist()
    )


def test_one_row_requests_to_xgboost_use_the_checked_tree_walk(data) -> None:
    x, y = data
    clf = XGBClassifier(n_estimators=40, max_depth=4).fit(x, y)
    server = _server(clf)
    assert server.predictor.row_scorer is not None
    rows = x.iloc[-200:]
    expected = clf.predict(rows).tolist()
    proba = clf.predict_proba(rows)
    for i, row in enumerate(rows.to_numpy().tolist()):
        out = _call(server, "/", {"inputs": [row], "proba": True})
        assert out["outputs"] == [expected[i]]
        np.testing.assert_allclose(out["probabilities"][0], proba[i], rtol=1e-5, atol=1e-6)
    status, body = _call(server, "/", {"inputs": [[float("nan")] * x.shape[1]]})
    assert status == 400 and "finite" in body["error"]
