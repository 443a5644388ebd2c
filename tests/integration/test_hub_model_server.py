"""hub://model_server deployed as a real replica (``python -m tickrun serve``) over loopback
HTTP: MLflow's /invocations formats and Nuclio JSON answer with the model object's predictions."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tickrun
from tickrun.functions.runs import load_model
from tickrun.hub.sampledata import market_data

pytestmark = pytest.mark.slow

DATA = market_data()


def _post(url: str, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    bars = tmp_path / "bars.csv"
    pd.read_csv(DATA).iloc[-4000:].to_csv(bars, index=False)
    feats = tickrun.import_function("hub://market_features").run(inputs={"dataset": str(bars)})
    run = tickrun.import_function("hub://auto_trainer").run(
        "train",
        params={
            "model_class": "xgboost.XGBClassifier",
            "CLASS_n_estimators": 40,
            "drop_columns": "future_return",
            "plots": False,
        },
        inputs={"dataset": feats.outputs["features"]},
    )
    assert run.state == "completed", run.error
    return str(run.outputs["model"])


def test_served_model_answers_like_the_model_object(trained: str, tmp_path: Path) -> None:
    model, info = load_model(trained)
    rows = pd.read_parquet(
        tickrun.functions.runs.DataItem(trained.rsplit("/", 1)[0] + "/test_set").local()
    ).iloc[:5]
    x = rows[info.feature_names]
    expected = model.predict(x).tolist()
    proba = model.predict_proba(x)
    fn = tickrun.import_function("hub://model_server:1")
    with fn.deploy(
        env={"MODEL_URI": trained, "MODEL_NAME": "btc-updown"}, directory=tmp_path / "fn"
    ) as server:
        url = server.url
        cols = list(x.columns)
        bodies = [
            {"dataframe_split": {"columns": cols, "data": x.to_numpy().tolist()}},
            {"dataframe_records": x.to_dict("records")},
            {"instances": x.to_numpy().tolist()},
            {"inputs": x.to_dict("list")},
        ]
        for body in bodies:
            status, out = _post(f"{url}/invocations", body)
            assert status == 200, out
            assert out["predictions"] == expected, next(iter(body))
        status, out = _post(f"{url}/invocations", x.to_csv(index=False).encode(), "text/csv")
        assert status == 200 and out["predictions"] == expected
        status, out = _post(f"{url}/", {"inputs": x.to_dict("records"), "proba": True})
        assert status == 200 and out["outputs"] == expected
        assert out["model_name"] == "btc-updown"
        np.testing.assert_allclose(out["probabilities"], proba, rtol=1e-6)
        assert server.invoke({"inputs": x.to_numpy().tolist()})["outputs"] == expected
        status, out = _post(
            f"{url}/invocations", {"dataframe_split": {"columns": ["x"], "data": [[1]]}}
        )
        assert status == 400 and out["error_code"] == "BAD_REQUEST"
        with urllib.request.urlopen(f"{url}/ping") as r:
            assert r.status == 200
    assert server.process is not None and server.process.poll() is not None
