"""hub://model_monitor:1's Kafka source and Kafka alert against a real broker: prediction records
of the shipped hourly BTCUSDT bars (two model versions, over two partitions) are read from the
topic's start to its end, filtered by model version, put back in time order, and give the same
drift and performance results as the same window given as a table; the alert lands on a topic."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.peers import KafkaBroker
from tests.support.kafka_functions import produce, read_topic
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

mf = import_function("hub://market_features:1.2").module()


@pytest.fixture
def tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _records(window: pd.DataFrame, names: list[str], version: str) -> list[dict[str, Any]]:
    out = []
    for row in window.itertuples(index=False):
        d = row._asdict()
        feats = {n: (None if math.isnan(d[n]) else float(d[n])) for n in names}
        out.append(
            {
                "symbol": "BTCUSDT",
                "open_time": int(pd.Timestamp(d["timestamp"]).value // 10**6),
                "close": float(d["close"]),
                "features": feats,
                "probability": float(d["probability"]),
                "prediction": int(d["prediction"]),
                "model_version": version,
            }
        )
    return out


def test_topic_source_matches_the_table_and_alert_lands_on_a_topic(
    tracked: Path, kafka_broker: KafkaBroker
) -> None:
    bars = pd.read_csv(market_data())
    feats = mf.compute_features(bars)
    feats = feats.assign(close=bars.loc[feats.index, "close"].to_numpy())
    names = mf.feature_columns(feats.drop(columns=["close"]))
    years = pd.to_datetime(feats["timestamp"], utc=True).dt.year
    ref = feats[years == 2018].reset_index(drop=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(ref[names], ref["label"])
    window = feats.iloc[-600:].reset_index(drop=True)
    p = model.predict_proba(window[names])[:, 1]
    window = window.assign(probability=p, prediction=(p > 0.5).astype(int))
    brokers = kafka_broker.bootstrap_servers
    kafka_broker.create_topic("monitored-predictions", partitions=2)
    kafka_broker.create_topic("monitor-alerts")
    records = _records(window, names, "3")
    other = _records(window.iloc[:50], names, "2")  # another version's records are left out
    rng = np.random.default_rng(0)
    produce(
        brokers,
        "monitored-predictions",
        [*other, *records],
        partition_of=lambda i: int(rng.integers(2)),
    )
    ref_path = tracked / "reference.csv"
    ref.to_csv(ref_path, index=False)

    fn = import_function("hub://model_monitor:1")
    run = fn.run(
        "monitor",
        params={
            "topic": "monitored-predictions",
            "brokers": brokers,
            "model_version": "3",
            "label_column": "label",
            "alert_topic": "monitor-alerts",
            "plots": False,
        },
        inputs={"reference": str(ref_path)},
        progress=False,
    )
    assert run.state == "completed", run.error
    r = run.results
    assert r["source"] == "kafka:monitored-predictions" and r["current_rows"] == len(window)
    assert r["alert_topic_delivered"] is True

    table_path = tracked / "window.csv"
    window.drop(columns=["label", "future_return"]).to_csv(table_path, index=False)
    same = fn.run(
        "monitor",
        params={"plots": False, "alert_log": False},
        inputs={"reference": str(ref_path), "current": str(table_path)},
        progress=False,
    )
    assert same.state == "completed", same.error
    s = same.results
    for key in ("drifted_features", "features_checked", "active_bars", "trades", "auc"):
        assert r[key] == s[key], key
    for key in ("max_psi", "prediction_psi", "hit_rate", "pnl_net", "log_loss"):
        assert r[key] == pytest.approx(s[key], rel=1e-9), key
    assert r["drifted_count"] >= 2  # the defaults alert at 2 drifted features

    alerts = [json.loads(rec.value) for rec in read_topic(brokers, "monitor-alerts", 1)]
    assert len(alerts) == 1 and alerts[0]["type"] == "model_monitor.alert"
    assert alerts[0]["run"] == run.uid and alerts[0]["drifted_features"] == r["drifted_features"]
