"""model_monitor 1.0.0 on what model_server 1.2 wrote and on the registry: the reference is the
training dataset of ``models:/btc@champion`` (the version's lineage), the window is the JSONL
directory a real model_server recorder wrote (``predictions_dir``); an unshifted window of later
bars raises no alert, the same window with volume features scaled does. And the hourly-schedule
defaults on the shipped BTCUSDT bars: adjacent 30-day windows after a half-year reference raise
(almost) no alert where the i.i.d. defaults alerted on every one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tickrun
from tickrun.functions.runs import load_model
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

mm = import_function("hub://model_monitor:1.0.0").module()
mf = import_function("hub://market_features:1.2").module()
ms = import_function("hub://model_server:1.2").module()

VOLUME = ["volume_ratio_6", "volume_ratio_24", "volume_ratio_72"]
LOGIT = {"model_class": "sklearn.linear_model.LogisticRegression", "scale": True, "plots": False}


@pytest.fixture(scope="module")
def feats() -> pd.DataFrame:
    bars = pd.read_csv(market_data())
    f = mf.compute_features(bars)
    return f.assign(
        close=bars.loc[f.index, "close"].to_numpy(),
        time_=pd.to_datetime(f["timestamp"], utc=True),
    )


@pytest.fixture(scope="module")
def names(feats: pd.DataFrame) -> list[str]:
    return mf.feature_columns(feats.drop(columns=["close", "time_"]))


def _periods(feats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference: the first half of 2025; after: the bars from July 2025 on."""
    t = feats["time_"]
    ref = feats[(t >= "2025-01-01") & (t < "2025-07-01")].drop(columns=["time_"])
    after = feats[t >= "2025-07-01"].drop(columns=["time_"]).reset_index(drop=True)
    return ref, after


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _serve(model_uri: str, window: pd.DataFrame, directory: Path) -> int:
    """Send the window's rows to a model_server 1.2 (one request per row, as the Kafka path
    does) whose recorder writes JSONL to ``directory``; the number of records written."""
    model, info = load_model(model_uri)
    pred = ms.Predictor(model, list(info.feature_names))
    sink = ms.JsonlSink(directory)
    rec = ms.Recorder(lambda _r: sink, pred.feature_names, "v1")
    server = ms.ModelServer(pred, version="v1", recorder=rec)
    cols = pred.feature_names
    for i, row in enumerate(window[cols].itertuples(index=False)):
        server.respond("nuclio", [list(row)], False, f"r{i}")
    assert rec.flush(30)
    rec.close()
    return int(rec.stats()["recorded"])


def test_reference_from_the_registry_and_window_from_model_servers_jsonl(
    home: Path, feats: pd.DataFrame, names: list[str], fake_context: Any
) -> None:
    ref, after = _periods(feats)
    train_path = home / "train.csv"
    ref.to_csv(train_path, index=False)
    run = import_function("hub://auto_trainer:1.1.0").run(
        "train", params=LOGIT, inputs={"dataset": str(train_path)}, progress=False
    )
    assert run.state == "completed", run.error
    tickrun.register_model(run.outputs["model"], "btc", aliases=["champion"])
    uri, label = mm.reference_from_model("models:/btc@champion")
    assert label == str(train_path) and len(uri.as_df()) == len(ref)

    window = after.iloc[-720:]
    plain, shifted = home / "plain", home / "shifted"
    assert _serve(run.outputs["model"], window, plain) == len(window)
    scaled = window.assign(**{c: window[c] * 1.5 for c in VOLUME})
    assert _serve(run.outputs["model"], scaled, shifted) == len(window)
    records = mm.sources.read_jsonl_dir(str(plain))
    assert [r["request_id"] for r in records] == [f"r{i}" for i in range(len(window))]
    assert json.loads(json.dumps(records[0]))["features"]["rsi_14"] == pytest.approx(
        float(window["rsi_14"].iloc[0])
    )

    mm.monitor(fake_context, model="models:/btc@champion", predictions_dir=str(plain), plots=False)
    quiet = fake_context.results
    assert quiet["reference"] == str(train_path) and quiet["reference_rows"] == len(ref)
    assert quiet["source"] == f"jsonl:{plain}" and quiet["current_rows"] == len(window)
    assert quiet["features_checked"] == len(pd.Index(names).intersection(window.columns))
    assert quiet["alert"] is False and quiet["drifted_count"] <= 1
    # the model's probabilities, as recorded, against the reference's label base rate
    assert quiet["prediction_drift_method"] == "base_rate" and 0 < quiet["prediction_mean"] < 1

    loud = type(fake_context)()
    mm.monitor(loud, model="models:/btc@champion", predictions_dir=str(shifted), plots=False)
    r = loud.results
    assert r["alert"] is True and set(VOLUME) <= set(r["drifted_features"])
    assert r["retrain_recommended"] is True
    with pytest.raises(ValueError, match="not a directory"):
        mm.monitor(type(fake_context)(), model="models:/btc@champion", predictions_dir="/nope")


def _alerting(ref: pd.DataFrame, cur: pd.DataFrame, names: list[str], **kw: Any) -> bool:
    k = kw.pop("min_drifted", 2)
    return int(mm.feature_drift(ref, cur, names, **kw)["drifted"].sum()) >= k


def test_hourly_defaults_quiet_on_adjacent_windows_loud_on_shifted_ones(
    feats: pd.DataFrame, names: list[str]
) -> None:
    ref, after = _periods(feats)
    rows, step = 720, 24 * 6  # a 30-day window of hourly records, every 6 days for 120 days
    windows = [after.iloc[s : s + rows] for s in range(0, 24 * 120, step)]
    defaults = {"psi_threshold": 0.25, "autocorrelation": True, "min_drifted": 2}
    quiet = sum(_alerting(ref, w, names, **defaults) for w in windows)
    loud = sum(
        _alerting(ref, w.assign(**{c: w[c] * 1.5 for c in VOLUME}), names, **defaults)
        for w in windows
    )
    old = {"psi_threshold": 0.2, "autocorrelation": False, "min_drifted": 1}
    before = sum(_alerting(ref, w, names, **old) for w in windows)
    assert len(windows) == 20
    assert quiet <= 2  # measured: 1 of 40 windows every 3 days
    assert loud == len(windows)
    assert before >= len(windows) - 2  # the i.i.d. KS and PSI 0.2 alerted on (nearly) every one


def test_a_message_is_one_record_or_a_json_lines_batch() -> None:
    one = {"features": {"a": 1.0}, "prediction": 1}
    assert mm.sources.message_records(json.dumps(one).encode()) == [one]
    batch = b"".join(json.dumps({**one, "request_id": i}).encode() + b"\n" for i in range(3))
    assert [r["request_id"] for r in mm.sources.message_records(batch)] == [0, 1, 2]
    assert mm.sources.message_records(batch + b"not json\n[1, 2]\n") == (
        mm.sources.message_records(batch)
    )
    assert mm.sources.message_records(b"[1, 2]") == [] and mm.sources.message_records(None) == []
