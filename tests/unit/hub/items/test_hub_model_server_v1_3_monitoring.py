"""model_server 1.3's monitoring, in process: every request becomes one line of the compact
predictions stream (JSONL sink, rotated, a header opening each file), which expands back into
exactly the predictions made, one hub://model_monitor record per row; model_monitor 1.1 reads
it (and 1.2's records beside it); a broken or slow sink never fails a request; every response
names the model version."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

ms = import_function("hub://model_server:1.3").module()
mf = import_function("hub://market_features").module()
mon_sources = import_function("hub://model_monitor:1.1").module().sources


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    bars = pd.read_csv(market_data()).iloc[-3000:]
    frame = mf.compute_features(bars, windows="6,24")
    x = frame[mf.feature_columns(frame)].reset_index(drop=True)
    return x, frame["label"].to_numpy()


@pytest.fixture(scope="module", params=["pipeline-lr", "xgb-clf"])
def model(request: Any, data: tuple[pd.DataFrame, np.ndarray]) -> Any:
    x, y = data
    if request.param == "pipeline-lr":
        return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    return XGBClassifier(n_estimators=30, max_depth=3).fit(x, y)


class Ctx(SimpleNamespace):
    pass


def _call(server: Any, path: str, body: Any, event_id: str, method: str = "POST") -> Any:
    ctx = Ctx(user_data=SimpleNamespace(server=server))
    event = SimpleNamespace(
        path=path, method=method, body=body, content_type="application/json", id=event_id
    )
    return asyncio.run(ms.handler(ctx, event))


def _jsonl_server(model: Any, directory: Path, rotate_bytes: int = 1 << 20) -> Any:
    pred = ms.Predictor(model)
    sink = ms.JsonlSink(directory, rotate_bytes)
    rec = ms.Recorder(lambda _r: sink, pred.feature_names, "v7")
    return ms.ModelServer(pred, name="btc", version="v7", recorder=rec)


def test_jsonl_records_equal_the_predictions_and_model_monitor_reads_them(
    model: Any, data: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    x, _ = data
    server = _jsonl_server(model, tmp_path / "preds", rotate_bytes=8 << 10)
    rows = x.iloc[:150]
    cols = list(x.columns)
    sent: list[tuple[str, list[float]]] = []
    answers: list[Any] = []
    for i in range(100):  # one-row requests, the commonest, in both protocols
        row = rows.iloc[i].tolist()
        if i % 2:
            body = {"dataframe_split": {"columns": cols, "data": [row]}}
            answers.extend(_call(server, "/invocations", body, f"r{i}").body["predictions"])
        else:
            body = {"inputs": [dict(zip(cols, row, strict=True))]}
            answers.extend(_call(server, "/", body, f"r{i}").body["outputs"])
        sent.append((f"r{i}", row))
    big = rows.iloc[100:].to_numpy().tolist()  # one 50-row request
    answers.extend(_call(server, "/", {"inputs": big}, "big").body["outputs"])
    sent.extend(("big", r) for r in big)
    assert server.recorder.flush(10)

    files = sorted((tmp_path / "preds").glob("predictions-*.jsonl"))
    assert len(files) > 1  # rotated at 8 KiB, each file self-describing
    for f in files:
        head = json.loads(f.read_bytes().split(b"\n", 1)[0])
        assert head == {"predictions": 2, "features": cols}
    records = ms.read_jsonl(tmp_path / "preds")
    assert len(records) == len(sent) == 150
    assert [r["request_id"] for r in records] == [s[0] for s in sent]
    assert [r["features"] for r in records] == [dict(zip(cols, s[1], strict=True)) for s in sent]
    assert [r["prediction"] for r in records] == answers == model.predict(rows).tolist()
    np.testing.assert_allclose(
        [r["probability"] for r in records], model.predict_proba(rows)[:, 1], rtol=1e-6
    )
    assert {r["model_version"] for r in records} == {"v7"}
    assert all(r["latency_ms"] >= 0 and r["time"] > 1.7e12 for r in records)
    assert server.recorder.stats()["recorded"] == 101  # requests: 100 one-row, one of 50

    # model_monitor's reader turns the records into its table: one column per feature.
    frame = mon_sources.records_frame(records)
    np.testing.assert_allclose(frame[cols].to_numpy(), rows.to_numpy())
    assert frame["prediction"].tolist() == answers
    # model_monitor 1.1 reads the directory itself, to the same table.
    direct = mon_sources.records_frame(mon_sources.read_jsonl_dir(str(tmp_path / "preds")))
    pd.testing.assert_frame_equal(direct, frame)
    server.recorder.close()


def test_numpy_rows_nan_features_and_a_model_swap_keep_their_records(
    data: Any, tmp_path: Path
) -> None:
    x, _ = data
    cols = list(x.columns)
    rec = ms.Recorder(lambda _r: ms.JsonlSink(tmp_path / "p"), cols, "m/1")
    rows = x.iloc[:3].to_numpy().copy()
    rows[1, 2] = np.nan  # a missing feature is recorded as null and read back as NaN
    rec.record("np", rows, np.array([0, 1, 0]), np.array([[0.7, 0.3]] * 3), 0.5)
    rec.model_version = "m/2"  # what Reloader.check does on a swap
    rec.set_features(cols[:2])  # a new model over fewer features: a new header
    rec.record("after", [[1.0, 2.0]], [1], [[0.1, 0.9]], 0.25)
    assert rec.flush(10)
    records = ms.read_jsonl(tmp_path / "p")
    assert [r["request_id"] for r in records] == ["np", "np", "np", "after"]
    assert [r["model_version"] for r in records] == ["m/1"] * 3 + ["m/2"]
    assert records[1]["features"][cols[2]] is None
    assert records[0]["features"] == dict(zip(cols, rows[0].tolist(), strict=True))
    assert records[3]["features"] == {cols[0]: 1.0, cols[1]: 2.0}
    assert [r["probability"] for r in records] == [0.3, 0.3, 0.3, 0.9]
    frame = mon_sources.records_frame(mon_sources.read_jsonl_dir(str(tmp_path / "p")))
    assert np.isnan(frame.loc[1, cols[2]]) and frame.loc[3, cols[1]] == 2.0
    assert rec.stats() == {"recorded": 2, "dropped": 0, "failed": 0, "queued": 0}
    rec.close()


def test_model_monitor_reads_12_records_and_13_streams_mixed(tmp_path: Path) -> None:
    old = {"features": {"a": 1.0, "b": 2.0}, "probability": 0.6, "prediction": 1}
    stream = ms.monitoring.header(["a", "b"]) + (
        b'["r1",1700000000000,0.1,"m/3",[[3.0,4.0],[5.0,null]],[0,1],[[0.8,0.2],0.7],null]\n'
        b"not json\n"
        b'["short"]\n'
    )
    value = json.dumps(old).encode() + b"\n" + stream
    records = mon_sources.message_records(value)
    assert records[0] == old
    assert [r["features"] for r in records[1:]] == [{"a": 3.0, "b": 4.0}, {"a": 5.0, "b": None}]
    assert [r["probability"] for r in records[1:]] == [0.2, 0.7]
    assert [r["model_version"] for r in records[1:]] == ["m/3", "m/3"]
    assert mon_sources.message_records(json.dumps(old)) == [old]  # one record a message (1.2)
    assert ms.monitoring.expand(value) == records


def test_kafka_path_records_the_bar_open_time(model: Any, data: Any, tmp_path: Path) -> None:
    x, _ = data
    server = _jsonl_server(model, tmp_path / "k")
    rule = ms.SignalRule()
    msg = {"symbol": "BTCUSDT", "open_time": 1_700_000_000_000, "close": 1.0}
    out = ms.score_features(server, rule, {**msg, "features": x.iloc[0].to_dict()}, "e1")
    assert server.recorder.flush(10)
    (rec,) = ms.read_jsonl(tmp_path / "k")
    assert rec["open_time"] == msg["open_time"] and rec["request_id"] == "e1"
    assert rec["probability"] == pytest.approx(out["probability"], rel=1e-9)
    server.recorder.close()


class BrokenSink:
    def __init__(self) -> None:
        self.closed = 0

    def write(self, head: bytes, lines: list[bytes]) -> None:
        raise OSError("disk full")

    def close(self) -> None:
        self.closed += 1


def test_a_broken_sink_is_counted_and_never_fails_a_request(model: Any, data: Any) -> None:
    x, _ = data
    pred = ms.Predictor(model)
    rec = ms.Recorder(lambda _r: BrokenSink(), pred.feature_names, "v1")
    server = ms.ModelServer(pred, version="v1", recorder=rec)
    for i in range(20):
        out = _call(server, "/", {"inputs": [x.iloc[i].tolist()]}, f"r{i}")
        assert out.status_code == 200 and out.body["outputs"] == model.predict(x.iloc[[i]]).tolist()
    assert rec.flush(10)
    assert rec.stats()["failed"] == 20 and rec.stats()["recorded"] == 0

    def no_sink(_r: Any) -> Any:
        raise ConnectionError("no brokers")  # a sink that cannot even be made

    rec2 = ms.Recorder(no_sink, pred.feature_names, "v1")
    server2 = ms.ModelServer(pred, version="v1", recorder=rec2)
    assert _call(server2, "/invocations", {"inputs": [x.iloc[0].tolist()]}, "a").status_code == 200
    assert rec2.flush(10) and rec2.stats()["failed"] == 1
    rec.close()
    rec2.close()


class SlowSink:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[bytes] = []

    def write(self, head: bytes, lines: list[bytes]) -> None:
        self.release.wait(10)
        self.lines.extend(lines)

    def close(self) -> None:
        pass


def test_a_full_queue_drops_and_counts_without_blocking(model: Any, data: Any) -> None:
    x, _ = data
    pred = ms.Predictor(model)
    sink = SlowSink()
    rec = ms.Recorder(lambda _r: sink, pred.feature_names, "v1", max_queue=5, batch=1)
    server = ms.ModelServer(pred, version="v1", recorder=rec)
    for i in range(40):
        assert _call(server, "/", {"inputs": [x.iloc[i].tolist()]}, f"r{i}").status_code == 200
    stats = rec.stats()
    assert stats["dropped"] >= 40 - 5 - 1  # the queue holds 5, the stuck batch took at most 1
    sink.release.set()
    assert rec.flush(10)
    assert len(sink.lines) == 40 - rec.stats()["dropped"]
    rec.close()


def test_every_response_names_the_model_version(
    model: Any, data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _ = data
    path = tmp_path / "m.joblib"
    joblib.dump(model, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert ms.model_version(str(path), {}) == digest
    assert ms.model_version(str(path), {"MODEL_VERSION": "champion-3"}) == "champion-3"

    monkeypatch.setenv("MODEL_URI", str(path))
    monkeypatch.setenv("MONITOR_DIR", str(tmp_path / "preds"))
    for var in ("MODEL_VERSION", "MONITOR_TOPIC", "MONITOR_BROKERS"):
        monkeypatch.delenv(var, raising=False)
    logged: list[Any] = []
    ctx = Ctx(user_data=SimpleNamespace(), logger=SimpleNamespace(info_with=lambda *a, **k: logged))
    ms.init_context(ctx)
    server = ctx.user_data.server
    assert server.version == digest
    replies = [
        _call(server, "/", {"inputs": [x.iloc[0].tolist()]}, "a"),
        _call(server, "/invocations", {"inputs": [x.iloc[0].tolist()]}, "b"),
        _call(server, "/invocations", {"instances": [[1.0]]}, "c"),  # 400: wrong width
        _call(server, "/ping", None, "d", method="GET"),
        _call(server, "/", None, "e", method="GET"),
    ]
    assert [r.status_code for r in replies] == [200, 200, 400, 200, 200]
    assert all(r.headers[ms.VERSION_HEADER] == digest for r in replies)
    assert replies[4].body["version"] == digest
    assert server.recorder.flush(10)
    records = ms.read_jsonl(tmp_path / "preds")
    assert [r["request_id"] for r in records] == ["a", "b"]  # the refused request is not one
    assert {r["model_version"] for r in records} == {digest}
    assert json.loads(json.dumps(records)) == records
    server.recorder.close()
