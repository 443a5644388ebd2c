"""model_server 1.3.0 — a logged model behind HTTP and on a Kafka stream, as a Nuclio handler,
every prediction recorded for monitoring.

``init_context`` loads the model named by ``MODEL_URI`` (``store://…``, ``s3://…`` or a local
file) once per worker. Requests (as in 1.1):

- ``POST /invocations`` — MLflow's scoring protocol (``dataframe_split``, ``dataframe_records``,
  ``instances``, ``inputs``; JSON or ``text/csv``) → ``{"predictions": [...]}``;
  ``GET /ping``, ``GET /health`` → 200 as MLflow's server answers;
- ``POST /`` (or ``/predict``) — Nuclio/MLRun-style JSON: ``{"inputs": rows}``, optional
  ``"proba": true`` → ``{"id", "model_name", "outputs"[, "probabilities"]}``;
- ``GET /`` — the model's name, version, framework and feature names;
- a Kafka event from a ``kafka-cluster`` trigger: a features message
  ``{"symbol", "open_time", "close", "features": {name: value}}`` →
  ``{"symbol", "open_time", "close", "probability", "signal"}``.

New in 1.2:

- every HTTP response carries ``X-Model-Version``: ``MODEL_VERSION`` when set, else the first
  12 hex digits of the model file's sha256;
- each prediction (features, output, P(class 1), model version, latency, request id, time; the
  bar's ``open_time`` on the Kafka path) is recorded to a monitoring sink: the Kafka topic
  ``MONITOR_TOPIC`` on ``MONITOR_BROKERS`` when both are set, else JSONL files in
  ``MONITOR_DIR`` (rotated at ``MONITOR_ROTATE_MB``); neither set: off. A full queue
  (``MONITOR_QUEUE``, 10000) drops and counts; a failing sink is counted and logged; neither
  fails a request.

New in 1.3: the records are written as a compact predictions stream (a header with the feature
names, then one line per request), ~1 us a request instead of ~3-5 us a record, so monitoring
keeps >= 0.9x of the throughput with it off (bench/serving --monitoring). hub://model_monitor
1.1 reads it (and 1.2's records); ``monitoring.expand``/``read_jsonl`` turn it back into
model_monitor's record format. See ``monitoring.py``.

The item's files (item.yaml ``files:``): ``predictor.py`` (request parsing, the model wrapper),
``monitoring.py`` (the recorder and its sinks), this module (the handler).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import json
import math
import os
import sys
import threading
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _sibling(name: str) -> types.ModuleType:
    """Another file of this item: a sub-module when the item is a package (bundled), else
    (a cached or exported copy imported by path) loaded from beside this file."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    unique = f"{__name__}__{name}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name}.py beside {__file__}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


predictor = _sibling("predictor")
monitoring = _sibling("monitoring")

INLINE_ROWS = predictor.INLINE_ROWS
RequestError = predictor.RequestError
Predictor = predictor.Predictor
rows_from_any = predictor.rows_from_any
parse_mlflow = predictor.parse_mlflow
to_matrix = predictor.to_matrix
compile_model = predictor.compile_model
compile_row = predictor.compile_row
relax_sklearn_checks = predictor.relax_sklearn_checks
Recorder = monitoring.Recorder
JsonlSink = monitoring.JsonlSink
read_jsonl = monitoring.read_jsonl
recorder_from_env = monitoring.recorder_from_env

VERSION_HEADER = "X-Model-Version"


class Reply:
    """A response with headers; the runtime's ``context.Response`` when there is one (Nuclio),
    else this plain object with the same attributes (tests calling the handler directly)."""

    def __init__(
        self, body: Any, headers: dict[str, str], content_type: str, status_code: int
    ) -> None:
        self.body = body
        self.headers = headers
        self.content_type = content_type
        self.status_code = status_code


def _reply(context: Any, body: Any, version: str, status: int = 200) -> Any:
    headers = {VERSION_HEADER: version}
    content_type = "text/plain" if isinstance(body, str) else "application/json"
    make = getattr(context, "Response", None)
    if make is None:
        return Reply(body, headers, content_type, status)
    return make(body=body, headers=headers, content_type=content_type, status_code=status)


class ModelServer:
    def __init__(
        self,
        predictor: Any,
        name: str = "model",
        uri: str | None = None,
        version: str = "unknown",
        recorder: Any = None,
    ) -> None:
        self.predictor = predictor
        self.name = name
        self.uri = uri
        self.version = version
        self.recorder = recorder

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "version": self.version,
            "framework": self.predictor.framework,
            "features": self.predictor.feature_names,
            "classes": None
            if self.predictor.classes is None
            else np.asarray(self.predictor.classes).tolist(),
            "monitoring": None if self.recorder is None else self.recorder.stats(),
        }

    def parse(self, path: str, body: Any, content_type: str) -> tuple[str, Any, bool]:
        """(protocol, rows in feature order, want probabilities)."""
        features = self.predictor.feature_names
        if path.rstrip("/").endswith("/invocations"):
            return "mlflow", parse_mlflow(body, content_type, features), False
        if isinstance(body, bytes | str):
            raise RequestError("send JSON (Content-Type: application/json)")
        proba = False
        data = body
        if isinstance(body, Mapping) and "inputs" in body:
            data = body["inputs"]
            proba = bool(body.get("proba", False))
        return "nuclio", rows_from_any(data, features), proba

    def predict(self, rows: Any, proba: bool) -> tuple[list[Any], list[Any] | None]:
        p = self.predictor
        if (
            p.row_scorer is not None
            and isinstance(rows, list)
            and len(rows) == 1
            and isinstance(rows[0], list | tuple)
        ):
            row = rows[0]
            if len(row) != p.n_features:
                raise RequestError(f"expected {p.n_features} features per row, got {len(row)}")
            try:
                label, p1 = p.row_scorer(row)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, RequestError):
                    raise
                raise RequestError(f"feature values must be numbers: {exc}") from exc
            return [label], ([[1.0 - p1, p1]] if proba and p1 is not None else None)
        x = to_matrix(rows, p.n_features)
        return p.predict(x), (p.predict_proba(x) if proba else None)

    def respond(self, protocol: str, rows: Any, proba: bool, event_id: Any) -> Any:
        start = time.perf_counter()
        # The monitor wants P(class 1) of a classifier even when the client did not ask.
        want = proba or (self.recorder is not None and self.predictor.is_classifier)
        outputs, probabilities = self.predict(rows, want)
        if self.recorder is not None:
            latency_ms = (time.perf_counter() - start) * 1000.0
            self.recorder.record(event_id, rows, outputs, probabilities, latency_ms)
        if protocol == "mlflow":
            return {"predictions": outputs}
        out: dict[str, Any] = {"id": event_id, "model_name": self.name, "outputs": outputs}
        if proba:
            out["probabilities"] = probabilities
        return out


MODEL_SCHEME = "models:/"
SIDECAR = "model.json"  # written by the controller beside a model file it binds
DEFAULT_REFRESH_S = 10.0


def _sidecar(uri: str) -> dict[str, Any] | None:
    """The controller's description of a model file it bound (``models:/`` env value → local
    file, tickrun.controller's bindings): the artifact's metadata (framework, feature names)."""
    if "://" in uri or uri.startswith(MODEL_SCHEME):
        return None
    try:
        data = json.loads(Path(uri).with_name(SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("meta"), dict) else None


def load(uri: str) -> tuple[Any, list[str] | None]:
    side = _sidecar(uri)
    if side is not None:
        from tickrun.functions.runs.serialize import load_model_file

        meta = side["meta"]
        names = meta.get("feature_names")
        return load_model_file(Path(uri), meta), list(names) if names else None
    from tickrun.functions.runs import load_model

    loaded = load_model(uri)
    model, info = loaded if isinstance(loaded, tuple) else (loaded, None)
    names = getattr(info, "feature_names", None)
    return model, list(names) if names else None


def registry_version(uri: str) -> tuple[str, int]:
    """(name, version) a ``models:/`` URI names now, read from the run DB's registry."""
    from tickrun.functions.runs.registry import get_model_version

    mv = get_model_version(uri)
    return mv.name, mv.version


def model_version(uri: str, env: Mapping[str, str] | None = None) -> str:
    """``MODEL_VERSION`` when set; ``<name>/<version>`` for a ``models:/`` URI; else the sha256
    prefix of the model file (of the URI when the file cannot be read), so two different models
    never answer with the same version."""
    env = os.environ if env is None else env
    given = env.get("MODEL_VERSION")
    if given:
        return given
    if uri.startswith(MODEL_SCHEME):
        name, version = registry_version(uri)
        return f"{name}/{version}"
    digest = hashlib.sha256()
    try:
        from tickrun.functions.runs import DataItem

        with open(DataItem(uri).local(), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except Exception:  # a URI the item cannot open as a file: its text still names the model
        digest = hashlib.sha256(uri.encode())
    return digest.hexdigest()[:12]


def init_context(context: Any) -> None:
    uri = os.environ.get("MODEL_URI")
    if not uri:
        raise RuntimeError("set MODEL_URI to the model to serve (store://…, s3://… or a file)")
    source = uri
    if uri.startswith(MODEL_SCHEME) and not os.environ.get("MODEL_VERSION"):
        # Pinned to the version resolved now: an alias moving during the load changes nothing.
        name, number = registry_version(uri)
        source = f"{MODEL_SCHEME}{name}/{number}"
    model, names = load(source)
    relax_sklearn_checks()
    pred = Predictor(model, names)
    version = model_version(source)
    recorder = recorder_from_env(pred.feature_names, version)
    context.user_data.server = ModelServer(
        pred,
        name=os.environ.get("MODEL_NAME", "model"),
        uri=uri,
        version=version,
        recorder=recorder,
    )
    context.user_data.signal_rule = SignalRule.from_env()
    context.user_data.reloader = Reloader.from_env(context, uri)
    context.logger.info_with(
        "model loaded",
        uri=uri,
        framework=pred.framework,
        version=version,
        monitoring="off" if recorder is None else str(type(recorder).__name__),
    )


class Reloader:
    """Serves what a ``models:/name@alias`` (or ``/latest``) URI names now: every ``interval_s``
    a thread asks the run DB's registry; a new version is loaded in full, then swapped in with
    one assignment (``context.user_data.server``). A request reads that reference once, so the
    ones in flight finish on the old model. A failed check or load keeps the current model."""

    def __init__(self, context: Any, uri: str, interval_s: float) -> None:
        self.context = context
        self.uri = uri
        self.interval_s = interval_s
        self.swaps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-reload", daemon=True)

    @classmethod
    def from_env(cls, context: Any, uri: str) -> Reloader | None:
        """Started for a moving ``models:/`` URI when ``MODEL_REFRESH_S`` > 0 (default 10) and
        ``MODEL_VERSION`` is unset (a fixed version label would lie after a swap)."""
        moving = uri.startswith(MODEL_SCHEME) and ("@" in uri or uri.endswith("/latest"))
        raw = os.environ.get("MODEL_REFRESH_S")
        try:
            interval = DEFAULT_REFRESH_S if raw in (None, "") else float(raw)
        except ValueError as exc:
            raise ValueError(f"MODEL_REFRESH_S={raw!r}: expected seconds (0 = never)") from exc
        if not moving or interval <= 0 or os.environ.get("MODEL_VERSION"):
            return None
        reloader = cls(context, uri, interval)
        reloader._thread.start()
        return reloader

    def check(self) -> bool:
        """Swap in the version the URI names now, if it changed; True when swapped."""
        current: ModelServer = self.context.user_data.server
        name, number = registry_version(self.uri)
        label = f"{name}/{number}"
        if label == current.version:
            return False
        model, names = load(f"{MODEL_SCHEME}{name}/{number}")
        fresh = ModelServer(
            Predictor(model, names),
            name=current.name,
            uri=self.uri,
            version=label,
            recorder=current.recorder,
        )
        if current.recorder is not None:
            current.recorder.model_version = label
            if fresh.predictor.feature_names != current.predictor.feature_names:
                current.recorder.set_features(fresh.predictor.feature_names)
        self.context.user_data.server = fresh  # the swap: one reference
        self.swaps += 1
        self.context.logger.info_with(
            "model swapped", uri=self.uri, previous=current.version, version=label
        )
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # the registry or the store is down: keep serving
                self.context.logger.warn_with(
                    "model refresh failed; serving the current model",
                    uri=self.uri,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )

    def stop(self) -> None:
        self._stop.set()


def _error(protocol_mlflow: bool, message: str) -> tuple[int, dict[str, Any]]:
    if protocol_mlflow:
        return 400, {"error_code": "BAD_REQUEST", "message": message}
    return 400, {"error": message}


# --- Kafka: features message → probability and signal ----------------------------------------


KAFKA_KIND = "kafka-cluster"


class SignalRule:
    """P(class 1) → 1 above ``long``, -1 below ``short`` (when given), else 0."""

    def __init__(self, long: float = 0.5, short: float | None = None) -> None:
        if not 0.0 <= long <= 1.0 or (short is not None and not 0.0 <= short <= long):
            raise ValueError("need 0 <= SHORT_THRESHOLD <= SIGNAL_THRESHOLD <= 1")
        self.long = long
        self.short = short

    @classmethod
    def from_env(cls) -> SignalRule:
        short = os.environ.get("SHORT_THRESHOLD")
        long = float(os.environ.get("SIGNAL_THRESHOLD") or 0.5)
        return cls(long, float(short) if short else None)

    def __call__(self, probability: float) -> int:
        if probability > self.long:
            return 1
        if self.short is not None and probability < self.short:
            return -1
        return 0


def score_features(
    server: ModelServer, rule: SignalRule, body: Any, event_id: Any = None
) -> dict[str, Any]:
    """A features message → the signal message (ValueError when it is not one)."""
    if isinstance(body, bytes | str):
        import json

        try:
            body = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"not a features message (not JSON): {exc}") from exc
    if not isinstance(body, Mapping) or not isinstance(body.get("features"), Mapping):
        raise ValueError("not a features message: expected an object with 'features'")
    if not server.predictor.is_classifier:
        raise ValueError("the Kafka features path needs a classifier (it publishes P(class 1))")
    features = server.predictor.feature_names
    if features is None:
        raise ValueError("this model has no feature names: cannot read a features message")
    try:
        symbol, open_time, close = str(body["symbol"]), int(body["open_time"]), body["close"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a features message: bad or missing {exc}") from exc
    # market_features 1.2 sends a NaN/inf feature as null (strict JSON): NaN again, so every
    # model path refuses it as non-finite, as it refused a JSON NaN.
    row = predictor._rows_from_records([body["features"]], features)[0]
    rows = [[math.nan if v is None else v for v in row]]
    start = time.perf_counter()
    labels, probabilities = server.predict(rows, proba=True)
    if probabilities is None:
        raise ValueError("this model gives no probabilities")
    if server.recorder is not None:
        latency_ms = (time.perf_counter() - start) * 1000.0
        server.recorder.record(event_id, rows, labels, probabilities, latency_ms, [open_time])
    p1 = float(probabilities[0][-1])
    return {
        "symbol": symbol,
        "open_time": open_time,
        "close": float(close),
        "probability": p1,
        "signal": rule(p1),
    }


async def handler(context: Any, event: Any) -> Any:
    server: ModelServer = context.user_data.server
    if getattr(getattr(event, "trigger", None), "kind", None) == KAFKA_KIND:
        # A RequestError (bad features) is a ValueError: raised, so retried then dead-lettered.
        return score_features(
            server, context.user_data.signal_rule, event.body, getattr(event, "id", None)
        )
    version = server.version
    path = event.path or "/"
    method = (event.method or "POST").upper()
    if method == "GET":
        if path in ("/ping", "/health"):
            return _reply(context, "\n", version)
        if path == "/version":
            return _reply(context, "tickrun-model-server-1.3.0", version)
        return _reply(context, server.info(), version)
    mlflow = path.rstrip("/").endswith("/invocations")
    try:
        protocol, rows, proba = server.parse(path, event.body, event.content_type or "")
        if len(rows) <= INLINE_ROWS:
            out = server.respond(protocol, rows, proba, event.id)
        else:
            out = await asyncio.to_thread(server.respond, protocol, rows, proba, event.id)
        return _reply(context, out, version)
    except RequestError as exc:
        status, body = _error(mlflow, str(exc))
        return _reply(context, body, version, status)
