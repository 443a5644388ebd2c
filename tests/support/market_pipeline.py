"""The Kafka market pipeline, shared by tests/integration/test_market_pipeline.py and
``python -m bench.pipeline``: train a model as a tracked run, deploy the three hub items through
a controller with Kafka triggers, and the batch pipeline they must agree with.

    klines ─market_features:1.2─▶ features ─model_server:1.1─▶ signals ─paper_trader:1─▶ pnl

Deployment notes (what the helpers do and why):

- each item is exported (``HubFunction.export``) and its ``function.yaml`` given a
  ``kafka-cluster`` trigger (retry once, then dead-letter to ``<topic>.dlq``); its HTTP trigger
  stays (health and ad-hoc calls);
- the items' ``requirements`` are dropped from the exported spec: the controller's interpreter
  already has pandas, scikit-learn and xgboost, and resolving xgboost's wheels (with its CUDA
  dependencies) on the host would dominate a test's time. A production deploy keeps them;
- the model server's ``MODEL_URI`` is not the tracked model's ``store://`` URI: resolving that
  needs the run DB, which a sandboxed replica must not see, and a root controller's replicas
  run as ``tickrun-fn``, who cannot read the user's artifact folder. The tracked model's file
  (the ``store://`` record's target) is shipped in the function's code folder instead, and
  ``MODEL_URI`` names it there (the replica's working folder).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from kafka import KafkaConsumer

import tickrun
from tickrun.functions.runs import DataItem, load_model, run_function

FEATURES = "hub://market_features:1.2"
MODEL_SERVER = "hub://model_server:1.1"
PAPER_TRADER = "hub://paper_trader:1"
WINDOWS = "6,24"
THRESHOLD, SHORT_THRESHOLD = 0.505, 0.495
NOTIONAL, FEE_BP = 10_000.0, 10.0


@dataclass(frozen=True)
class Topics:
    klines: str
    features: str
    signals: str
    pnl: str

    @classmethod
    def fresh(cls, prefix: str = "mkt") -> Topics:
        tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return cls(f"{tag}-klines", f"{tag}-features", f"{tag}-signals", f"{tag}-pnl")

    def all(self) -> list[str]:
        out = [self.klines, self.features, self.signals, self.pnl]
        return out + [f"{t}.dlq" for t in out[:3]]


def features_module() -> Any:
    return tickrun.import_function(FEATURES).module()


def minute_klines(path: Path | str) -> pd.DataFrame:
    return pd.read_csv(path)


# --- training (a tracked run) ------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    uri: str  # store://… of the logged model
    path: str  # its file in the local artifact store (what replicas load)
    features: list[str]


def train_model(klines: pd.DataFrame) -> Trained:
    """A scaled LogisticRegression on the batch features of ``klines`` (next-bar up/down),
    logged as a tracked model with its feature names."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mf = features_module()
    frame = mf.compute_features(mf.bars_from_klines(klines), windows=WINDOWS, label="updown")
    cols = mf.feature_columns(frame)

    def train(context: Any) -> None:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        model.fit(frame[cols], frame["label"])
        context.log_result("train_rows", len(frame))
        context.log_model("model", model, feature_names=cols)

    run = run_function(train, name="pipeline-model", progress=False)
    if run.state != "completed":
        raise AssertionError(f"training failed: {run.error}")
    uri = str(run.outputs["model"])
    return Trained(uri=uri, path=DataItem(uri).target, features=cols)


# --- batch pipeline (the reference) ------------------------------------------------------------


def batch_signals(klines: pd.DataFrame, model: Any, features: list[str]) -> pd.DataFrame:
    """open_time, close, probability, signal for every bar whose features are defined."""
    mf = features_module()
    bars = mf.bars_from_klines(klines)
    frame = mf.compute_features(bars, windows=WINDOWS, label=None)
    proba = model.predict_proba(frame[features])[:, 1]
    signal = np.where(proba > THRESHOLD, 1, np.where(proba < SHORT_THRESHOLD, -1, 0))
    close = bars.set_index("timestamp").loc[frame["timestamp"], "close"].to_numpy()
    return pd.DataFrame(
        {
            "open_time": frame["timestamp"].astype("int64").to_numpy(),
            "close": close,
            "probability": proba,
            "signal": signal,
        }
    )


def batch_pnl(signals: pd.DataFrame) -> dict[str, float]:
    """paper_trader's rules, vectorized: units change only where the signal changes, held over
    the next bar's move; fees on every traded value."""
    close = signals["close"].to_numpy(dtype=float)
    sig = signals["signal"].to_numpy()
    changed = np.r_[sig[0] != 0, sig[1:] != sig[:-1]]
    units = pd.Series(np.where(changed, sig * NOTIONAL / close, np.nan)).ffill().fillna(0.0)
    held = units.shift(1).fillna(0.0).to_numpy()
    gross = float((held * np.r_[0.0, np.diff(close)]).sum())
    traded = np.abs(np.diff(np.r_[0.0, units.to_numpy()]))
    fees = float((traded * close).sum() * FEE_BP / 1e4)
    return {
        "gross_pnl": gross,
        "fees": fees,
        "net_pnl": gross - fees,
        "trades": int(changed.sum()),
        "final_exposure": float(units.iloc[-1] * close[-1]),
    }


def load_trained(trained: Trained) -> Any:
    model, _info = load_model(trained.uri)
    return model


# --- deployment through a controller ---------------------------------------------------------


def _trigger(brokers: str, topic: str, group: str, output: str) -> dict[str, Any]:
    return {
        "kind": "kafka-cluster",
        "numWorkers": 1,
        "attributes": {
            "brokers": brokers,
            "topics": [topic],
            "consumerGroup": group,
            "initialOffset": "earliest",
            "outputTopic": output,
            "sessionTimeout": "6s",
            "heartbeatInterval": "1s",
            "commitInterval": "200ms",
            "maxRetries": 1,
            "retryBackoff": "50ms",
            "retryBackoffMax": "100ms",
            "onFailure": "dead-letter",
            "deadLetterTopic": f"{topic}.dlq",
        },
    }


def function_folder(
    root: Path,
    uri: str,
    name: str,
    env: dict[str, str],
    trigger: dict[str, Any],
    ship: Iterable[str] = (),
) -> Path:
    """The hub item exported to ``root/name`` with a Kafka trigger (see the module doc)."""
    folder = tickrun.import_function(uri).export(root / name, name=name, env=env)
    for file in ship:
        shutil.copyfile(file, folder / Path(file).name)
    path = folder / "function.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["spec"].pop("requirements", None)
    spec["spec"]["triggers"]["stream"] = trigger
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def deploy_pipeline(
    client: Any, root: Path, brokers: str, topics: Topics, trained: Trained, tag: str
) -> list[str]:
    """Deploy the three functions (process platform) and wait until each is ready."""
    plan = [
        (
            FEATURES,
            f"features-{tag}",
            {"FEATURE_WINDOWS": WINDOWS},
            _trigger(brokers, topics.klines, f"features-{tag}", topics.features),
        ),
        (
            MODEL_SERVER,
            f"model-{tag}",
            {
                "MODEL_URI": Path(trained.path).name,
                "MODEL_NAME": "btc-1m",
                "SIGNAL_THRESHOLD": str(THRESHOLD),
                "SHORT_THRESHOLD": str(SHORT_THRESHOLD),
            },
            _trigger(brokers, topics.features, f"model-{tag}", topics.signals),
        ),
        (
            PAPER_TRADER,
            f"trader-{tag}",
            {
                "NOTIONAL": str(NOTIONAL),
                "FEE_BP": str(FEE_BP),
                # A restarted replica resumes its book from the marks it published.
                "RESTORE_TOPIC": topics.pnl,
                "RESTORE_BROKERS": brokers,
            },
            _trigger(brokers, topics.signals, f"trader-{tag}", topics.pnl),
        ),
    ]
    names = []
    for uri, name, env, trigger in plan:
        ship = [trained.path] if uri == MODEL_SERVER else []
        folder = function_folder(root, uri, name, env, trigger, ship)
        spec = yaml.safe_load((folder / "function.yaml").read_text())
        client.deploy(spec, folder, platform="process")
        names.append(name)
    for name in names:
        client.wait_ready(name, timeout_s=180)
    return names


# --- reading topics ---------------------------------------------------------------------------


class TopicReader:
    """Reads a topic from its start in a thread, noting the wall time each record arrived."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.records: list[tuple[float, Any, dict[str, bytes]]] = []
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=brokers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for batch in self._consumer.poll(timeout_ms=100).values():
                now = time.time()
                for rec in batch:
                    self.records.append((now, rec.value, dict(rec.headers or [])))

    def values(self) -> list[Any]:
        return [json.loads(v) for _t, v, _h in list(self.records)]

    def wait(self, count: int, timeout_s: float, what: str = "records") -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f}s: {len(self.records)}/{count} {what}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


def keyed(values: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(str(v["symbol"]), int(v["open_time"])): v for v in values}
