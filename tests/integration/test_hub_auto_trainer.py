"""hub://market_features → hub://auto_trainer → hub://backtest as tracked runs whose artifacts
land in a real MinIO server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

import tickrun
from tests.peers import MinioServer
from tickrun.hub.sampledata import market_data

pytestmark = [pytest.mark.minio, pytest.mark.slow]

DATA = market_data()


@pytest.fixture
def minio_env(minio_server: MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    bucket = "hub-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TICKRUN_ARTIFACT_PATH", f"s3://{bucket}/tickrun")
    monkeypatch.setenv("TICKRUN_S3_ENDPOINT", f"http://{minio_server.endpoint}")
    monkeypatch.setenv("TICKRUN_S3_ACCESS_KEY", minio_server.access_key)
    monkeypatch.setenv("TICKRUN_S3_SECRET_KEY", minio_server.secret_key)
    for var in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL", "TICKRUN_HUB_PATH", "TICKRUN_HUB_URL"):
        monkeypatch.delenv(var, raising=False)
    return bucket


@pytest.fixture
def bars_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bars.csv"
    pd.read_csv(DATA).iloc[-8000:].to_csv(path, index=False)
    return path


def _objects(server: MinioServer, bucket: str) -> dict[str, int]:
    return {o.object_name: o.size for o in server.client().list_objects(bucket, recursive=True)}


@pytest.mark.parametrize(
    ("model_class", "params"),
    [
        ("sklearn.linear_model.LogisticRegression", {"scale": True}),
        ("xgboost.XGBClassifier", {"CLASS_n_estimators": 60, "CLASS_max_depth": 3}),
    ],
)
def test_train_on_btc_features_logs_metrics_and_plots_to_minio(
    minio_server: MinioServer,
    minio_env: str,
    bars_csv: Path,
    model_class: str,
    params: dict[str, object],
) -> None:
    features = tickrun.import_function("hub://market_features:1.1").run(
        params={"windows": "6,24,72"}, inputs={"dataset": str(bars_csv)}
    )
    assert features.state == "completed", features.error
    assert features.record.labels["hub.version"] == "1.1.0"

    fn = tickrun.import_function("hub://auto_trainer:1")
    run = fn.run(
        "train",
        params={"model_class": model_class, **params},  # 1.1's defaults: no leak to drop
        inputs={"dataset": features.outputs["features"]},
    )
    assert run.state == "completed", run.error
    labels = run.record.labels
    assert (labels["hub.item"], labels["hub.version"]) == ("auto_trainer", "1.3.0")
    assert run.results["split"] == "time" and run.results["purge_bars"] == 1
    assert run.results["dropped_target_columns"] == ["future_return"]
    for key in ("accuracy", "f1_score", "precision_score", "recall_score", "auc"):
        assert 0.0 <= run.results[key] <= 1.0
    objects = _objects(minio_server, minio_env)
    for key in (
        "confusion-matrix",
        "roc-curves",
        "calibration-curve",
        "feature-importance",
        "test_set",
        "model",
    ):
        target = run.artifact_record(key).target
        assert target.startswith(f"s3://{minio_env}/"), target
        name = target.split("/", 3)[3]
        assert objects.get(name, 0) > 0, f"{key} not in MinIO ({name})"
    png = run.artifact("roc-curves").get()
    assert png[:4] == b"\x89PNG"
    test_set = run.artifact("test_set").as_df()
    assert len(test_set) == round(features.results["rows"] * 0.2)

    model, _info = tickrun.functions.runs.load_model(run.outputs["model"])
    assert not {"label", "future_return", "timestamp"} & set(_info.feature_names)
    x = test_set[_info.feature_names]
    accuracy = float((model.predict(x) == test_set["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(run.results["accuracy"])

    bt = tickrun.import_function("hub://backtest").run(
        params={"model": run.outputs["model"], "fee_rate": 0.0005},
        inputs={"dataset": run.outputs["test_set"], "prices": str(bars_csv)},
    )
    assert bt.state == "completed", bt.error
    assert bt.results["bars"] == len(test_set)
    assert bt.results["cumulative_return"] > -1.0 and 0 <= bt.results["max_drawdown"] <= 1
    assert bt.artifact("equity-curve").get()[:4] == b"\x89PNG"
