"""hub://model_server 1.2 and 1.3 deployed as real replicas with MONITOR_TOPIC on a real Kafka
broker: every prediction served over HTTP lands on the topic (1.2: one record in model_monitor's
format each; 1.3: its compact predictions stream) and is read back by model_monitor's own topic
reader (1.0 and 1.1) as exactly the predictions made; every response names the model version;
a replica whose monitoring brokers are unreachable still answers every request."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.peers import KafkaBroker
from tickrun.functions.runs import load_model
from tickrun.hub import import_function
from tickrun.hub.function import free_port
from tickrun.hub.sampledata import market_data

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

mf = import_function("hub://market_features:1.2").module()


def _post(url: str, body: Any) -> tuple[int, Any, str | None]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read()), r.headers.get("X-Model-Version")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, pd.DataFrame]:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    bars = pd.read_csv(market_data()).iloc[-3000:]
    feats = mf.compute_features(bars)
    names = mf.feature_columns(feats)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(feats[names], feats["label"])
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    return path, feats[names].iloc[-60:].reset_index(drop=True)


# (model_server, model_monitor, the server's "recorded" counter: 1.2 counts records, 1.3
# requests; 1.3's shipper client)
VERSIONS = [
    ("1.2", "1.0", 60, ""),
    ("1.3", "1.1", 41, "kafka-python"),
    ("1.3", "1.1", 41, "confluent-kafka"),
]


@pytest.mark.parametrize(("server_version", "monitor_version", "recorded", "client"), VERSIONS)
def test_predictions_land_on_the_topic_in_model_monitors_format(
    served: tuple[Path, pd.DataFrame],
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    server_version: str,
    monitor_version: str,
    recorded: int,
    client: str,
) -> None:
    path, x = served
    model, _info = load_model(str(path))
    sources = import_function(f"hub://model_monitor:{monitor_version}").module().sources
    brokers = kafka_broker.bootstrap_servers
    # The broker is shared by the session: a topic name of its own.
    topic = f"served-predictions-{server_version.replace('.', '-')}-{client}"
    kafka_broker.create_topic(topic)
    cols = list(x.columns)
    fn = import_function(f"hub://model_server:{server_version}")
    env = {
        "MODEL_URI": str(path),
        "MODEL_VERSION": "btc-3",
        "MONITOR_TOPIC": topic,
        "MONITOR_BROKERS": brokers,
        "MONITOR_KAFKA_CLIENT": client or "auto",
    }
    answers: list[Any] = []
    with fn.deploy(env=env, directory=tmp_path / "fn") as server:
        for i in range(40):  # one-row requests, both protocols
            row = x.iloc[i].tolist()
            if i % 2:
                body: Any = {"dataframe_split": {"columns": cols, "data": [row]}}
                status, out, version = _post(f"{server.url}/invocations", body)
                answers.extend(out["predictions"])
            else:
                status, out, version = _post(f"{server.url}/", {"inputs": [row]})
                answers.extend(out["outputs"])
            assert status == 200 and version == "btc-3"
        status, out, version = _post(f"{server.url}/", {"inputs": x.iloc[40:].to_numpy().tolist()})
        assert status == 200 and version == "btc-3"
        answers.extend(out["outputs"])
        # model_monitor's own reader: from the topic's start to its end, once all are there.
        records: list[dict[str, Any]] = []
        for _ in range(60):
            records = sources.read_predictions([brokers], topic, timeout_s=30)
            if len(records) >= len(x):
                break
            time.sleep(0.5)
        info = _get(f"{server.url}/")
    assert len(records) == len(x) == 60
    assert answers == model.predict(x).tolist()
    assert [r["prediction"] for r in records] == answers  # one partition: request order
    frame = sources.records_frame(records)
    np.testing.assert_allclose(frame[cols].to_numpy(), x.to_numpy())
    np.testing.assert_allclose(frame["probability"], model.predict_proba(x)[:, 1], rtol=1e-6)
    assert set(frame["model_version"]) == {"btc-3"}
    ids = [r["request_id"] for r in records]
    assert None not in ids and len(set(ids)) == 41  # 40 one-row requests and one of 20 rows
    assert info["version"] == "btc-3" and info["monitoring"]["recorded"] == recorded


@pytest.mark.parametrize(
    ("server_version", "client"), [("1.2", ""), ("1.3", "kafka-python"), ("1.3", "confluent-kafka")]
)
def test_unreachable_monitoring_brokers_fail_no_request(
    served: tuple[Path, pd.DataFrame], tmp_path: Path, server_version: str, client: str
) -> None:
    path, x = served
    fn = import_function(f"hub://model_server:{server_version}")
    env = {
        "MODEL_URI": str(path),
        "MONITOR_TOPIC": "predictions",
        "MONITOR_BROKERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "MONITOR_KAFKA_CLIENT": client or "auto",
    }
    with fn.deploy(env=env, directory=tmp_path / "fn") as server:
        for i in range(30):
            status, out, version = _post(f"{server.url}/", {"inputs": [x.iloc[i].tolist()]})
            assert status == 200 and len(out["outputs"]) == 1
            assert version is not None and len(version) == 12  # the model file's sha256 prefix
        stats: dict[str, int] = {}
        for _ in range(100):
            stats = _get(f"{server.url}/")["monitoring"]
            if stats["failed"] > 0:
                break
            time.sleep(0.2)
    assert stats["failed"] > 0 and stats["recorded"] == 0


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_killed_shipper_is_counted_and_the_next_batch_starts_a_new_one(
    kafka_broker: KafkaBroker, tmp_path: Path, client: str
) -> None:
    """model_server 1.3's Kafka sink is a child process: killing it (OOM killer, kill -9) loses
    at most what was in flight, counted as failed; later batches reach the topic again."""
    ms = import_function("hub://model_server:1.3").module()
    sources = import_function("hub://model_monitor:1.1").module().sources
    topic = f"shipper-restart-{client}"
    kafka_broker.create_topic(topic)
    sinks: list[Any] = []

    def make(rec: Any) -> Any:
        sinks.append(
            ms.monitoring.KafkaSink([kafka_broker.bootstrap_servers], topic, rec, client=client)
        )
        return sinks[-1]

    rec = ms.Recorder(make, ["a", "b"], "m/1", flush_s=0.05)
    try:
        rec.record("before", [[1.0, 2.0]], [1], [[0.3, 0.7]], 0.1)
        assert rec.flush(10)
        _wait(lambda: rec.stats()["recorded"] == 1)
        sinks[0]._child.kill()
        sinks[0]._child.wait(10)
        for i in range(5):  # the first write after the kill fails; a new shipper takes over
            rec.record(f"after-{i}", [[float(i), 0.0]], [0], [[0.9, 0.1]], 0.1)
            assert rec.flush(10)
        _wait(lambda: rec.stats()["recorded"] + rec.stats()["failed"] == 6)
    finally:
        rec.close()
    stats = rec.stats()
    assert len(sinks) >= 2 and stats["failed"] >= 1 and stats["recorded"] >= 2
    records = sources.read_predictions([kafka_broker.bootstrap_servers], topic, timeout_s=30)
    ids = [r["request_id"] for r in records]
    assert ids[0] == "before" and len(ids) == stats["recorded"]
    assert ids[1:] == [f"after-{i}" for i in range(5)][-len(ids[1:]) :]  # order kept


def _wait(check: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
