"""model_server 1.0.0 — a logged model behind HTTP, as a Nuclio handler.

``init_context`` loads the model named by ``MODEL_URI`` (``store://…``, ``s3://…`` or a local
file) once per worker. Requests:

- ``POST /invocations`` — MLflow's scoring protocol (``dataframe_split``, ``dataframe_records``,
  ``instances``, ``inputs``; JSON or ``text/csv``) → ``{"predictions": [...]}``, so MLflow
  clients work unchanged; ``GET /ping``, ``GET /health`` → 200 as MLflow's server answers;
- ``POST /`` (or ``/predict``) — Nuclio/MLRun-style JSON: ``{"inputs": rows}`` where rows are
  lists in feature order or dicts by feature name (a single dict is one row), optional
  ``"proba": true`` → ``{"id", "model_name", "outputs"[, "probabilities"]}``;
- ``GET /`` — the model's name, framework and feature names.

Why it is fast: rows go straight into a float64 matrix in the model's feature order (no pandas
per request), scikit-learn is called on that matrix with its per-call validation relaxed (the
server checks finiteness itself), XGBoost is called through ``inplace_predict`` on one thread,
and small requests run on the event loop instead of hopping to a thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Requests up to this many rows are predicted inline on the event loop; bigger ones in a thread.
INLINE_ROWS = 64


class RequestError(ValueError):
    """The request body does not describe rows this model can score (→ 400)."""


# --- request parsing (pure) ------------------------------------------------------------------

def _rows_from_records(records: Sequence[Any], features: Sequence[str]) -> list[list[Any]]:
    try:
        return [[rec[f] for f in features] for rec in records]
    except KeyError as exc:
        raise RequestError(f"a record lacks feature {exc.args[0]!r}") from exc
    except TypeError as exc:
        raise RequestError("records must be objects keyed by feature name") from exc


def _rows_from_columns(columns: Mapping[str, Sequence[Any]], features: Sequence[str]
                       ) -> list[list[Any]]:
    missing = [f for f in features if f not in columns]
    if missing:
        raise RequestError(f"missing feature column(s): {', '.join(missing[:10])}")
    cols = [columns[f] for f in features]
    if any(isinstance(c, str) or not isinstance(c, Sequence) for c in cols):
        cols = [[c] for c in cols]  # {"f": 1.0, ...} is one row
    return [list(r) for r in zip(*cols, strict=True)]


def rows_from_any(data: Any, features: Sequence[str] | None) -> Any:
    """Rows from a list of lists, a list of dicts, a dict of columns or a single dict."""
    if isinstance(data, Mapping):
        if features is None:
            raise RequestError("this model has no feature names: send rows as lists")
        return _rows_from_columns(data, features)
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if not data:
            raise RequestError("no rows in the request")
        first = data[0]
        if isinstance(first, Mapping):
            if features is None:
                raise RequestError("this model has no feature names: send rows as lists")
            return _rows_from_records(data, features)
        if isinstance(first, int | float) and not isinstance(first, bool):
            return [data]  # one flat row
        return data
    raise RequestError("rows must be a list of rows, a list of records or an object of columns")


def parse_mlflow(body: Any, content_type: str, features: Sequence[str] | None) -> Any:
    """Rows from an MLflow ``/invocations`` body."""
    if isinstance(body, bytes | str) and "csv" in (content_type or ""):
        text = body.decode() if isinstance(body, bytes) else body
        reader = list(csv.reader(io.StringIO(text)))
        if len(reader) < 2:
            raise RequestError("CSV needs a header row and at least one data row")
        header, data = reader[0], reader[1:]
        return parse_mlflow({"dataframe_split": {"columns": header, "data": data}},
                            "application/json", features)
    if not isinstance(body, Mapping):
        raise RequestError("the body must be a JSON object with one of dataframe_split, "
                           "dataframe_records, instances, inputs")
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs")
            if k in body]
    if len(keys) != 1:
        raise RequestError("the body must have exactly one of dataframe_split, "
                           "dataframe_records, instances, inputs")
    key = keys[0]
    data = body[key]
    if key == "dataframe_split":
        if not isinstance(data, Mapping) or "data" not in data:
            raise RequestError("dataframe_split needs 'columns' and 'data'")
        columns = data.get("columns")
        rows = data["data"]
        if columns is None or features is None:
            return rows
        index = {c: i for i, c in enumerate(columns)}
        missing = [f for f in features if f not in index]
        if missing:
            raise RequestError(f"missing feature column(s): {', '.join(missing[:10])}")
        if list(columns) == list(features):
            return rows
        order = [index[f] for f in features]
        return [[row[i] for i in order] for row in rows]
    if key == "dataframe_records":
        if features is None:
            raise RequestError("this model has no feature names: use dataframe_split")
        if isinstance(data, Mapping):
            data = [data]
        return _rows_from_records(data, features)
    return rows_from_any(data, features)


def to_matrix(rows: Any, n_features: int | None) -> np.ndarray:
    try:
        x = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"feature values must be numbers: {exc}") from exc
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise RequestError("expected a 2-D table of rows")
    if n_features is not None and x.shape[1] != n_features:
        raise RequestError(f"expected {n_features} features per row, got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise RequestError("feature values must be finite numbers (no NaN/inf)")
    return x


# --- prediction ------------------------------------------------------------------------------

def _strip_feature_names(model: Any) -> Any:
    """A copy of a scikit-learn model that takes a plain matrix without warning per call (the
    server already put the columns in the fitted order)."""
    clone = copy.deepcopy(model)
    stack = [clone]
    while stack:
        est = stack.pop()
        if hasattr(est, "feature_names_in_"):
            with contextlib.suppress(AttributeError):
                del est.feature_names_in_
        for _name, step in getattr(est, "steps", []) or []:
            if step is not None and step != "passthrough":
                stack.append(step)
    return clone


class Predictor:
    """Wraps a model for matrix-in, list-out prediction; knows its feature order."""

    def __init__(self, model: Any, feature_names: Sequence[str] | None = None) -> None:
        self.model = model
        names = feature_names
        if names is None:
            names = getattr(model, "feature_names_in_", None)
        booster = None
        if hasattr(model, "get_booster"):
            booster = model.get_booster()
            names = names if names is not None else booster.feature_names
        elif type(model).__module__.startswith("xgboost") and hasattr(model, "inplace_predict"):
            booster = model
            names = names if names is not None else booster.feature_names
        self.feature_names: list[str] | None = [str(n) for n in names] if names is not None \
            else None
        n = getattr(model, "n_features_in_", None)
        self.n_features = len(self.feature_names) if self.feature_names else (
            int(n) if n is not None else None)
        self.framework = "xgboost" if booster is not None else type(model).__module__.split(".")[0]
        self.classes = getattr(model, "classes_", None)
        self._booster = booster
        if booster is not None:
            booster.set_param({"nthread": 1})  # one row: threads cost more than they give
            self._fast = None
        else:
            self._fast = _strip_feature_names(model)
        self.is_classifier = self.classes is not None

    def predict(self, x: np.ndarray) -> list[Any]:
        if self._booster is not None:
            raw = np.asarray(self._booster.inplace_predict(x, validate_features=False))
            if not self.is_classifier or self._booster is self.model:
                return raw.tolist()
            idx = (raw > 0.5).astype(np.int64) if raw.ndim == 1 else raw.argmax(axis=1)
            return np.asarray(self.classes)[idx].tolist()
        return np.asarray(self._fast.predict(x)).tolist()

    def predict_proba(self, x: np.ndarray) -> list[Any] | None:
        if not self.is_classifier:
            return None
        if self._booster is not None:
            raw = np.asarray(self._booster.inplace_predict(x, validate_features=False))
            if raw.ndim == 1:
                raw = np.column_stack([1.0 - raw, raw])
            return raw.tolist()
        proba = getattr(self._fast, "predict_proba", None)
        return np.asarray(proba(x)).tolist() if proba is not None else None


def relax_sklearn_checks() -> None:
    """Inputs are validated here once, so scikit-learn need not re-check every call."""
    try:
        import sklearn
    except ImportError:
        return
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)


# --- HTTP (Nuclio handler) -------------------------------------------------------------------

class ModelServer:
    def __init__(self, predictor: Predictor, name: str = "model", uri: str | None = None) -> None:
        self.predictor = predictor
        self.name = name
        self.uri = uri

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "uri": self.uri, "framework": self.predictor.framework,
                "features": self.predictor.feature_names,
                "classes": None if self.predictor.classes is None
                else np.asarray(self.predictor.classes).tolist()}

    def parse(self, path: str, body: Any, content_type: str) -> tuple[str, np.ndarray, bool]:
        """(protocol, matrix, want probabilities)."""
        features = self.predictor.feature_names
        if path.rstrip("/").endswith("/invocations"):
            rows = parse_mlflow(body, content_type, features)
            return "mlflow", to_matrix(rows, self.predictor.n_features), False
        if isinstance(body, bytes | str):
            raise RequestError("send JSON (Content-Type: application/json)")
        proba = False
        data = body
        if isinstance(body, Mapping) and "inputs" in body:
            data = body["inputs"]
            proba = bool(body.get("proba", False))
        return "nuclio", to_matrix(rows_from_any(data, features), self.predictor.n_features), proba

    def respond(self, protocol: str, x: np.ndarray, proba: bool, event_id: Any) -> Any:
        outputs = self.predictor.predict(x)
        if protocol == "mlflow":
            return {"predictions": outputs}
        out: dict[str, Any] = {"id": event_id, "model_name": self.name, "outputs": outputs}
        if proba:
            out["probabilities"] = self.predictor.predict_proba(x)
        return out


def load(uri: str) -> tuple[Any, list[str] | None]:
    from tickrun.functions.runs import load_model

    loaded = load_model(uri)
    model, info = loaded if isinstance(loaded, tuple) else (loaded, None)
    names = getattr(info, "feature_names", None)
    return model, list(names) if names else None


def init_context(context: Any) -> None:
    uri = os.environ.get("MODEL_URI")
    if not uri:
        raise RuntimeError("set MODEL_URI to the model to serve (store://…, s3://… or a file)")
    model, names = load(uri)
    relax_sklearn_checks()
    context.user_data.server = ModelServer(Predictor(model, names),
                                           name=os.environ.get("MODEL_NAME", "model"), uri=uri)
    context.logger.info_with("model loaded", uri=uri,
                             framework=context.user_data.server.predictor.framework)


def _error(protocol_mlflow: bool, message: str) -> tuple[int, dict[str, Any]]:
    if protocol_mlflow:
        return 400, {"error_code": "BAD_REQUEST", "message": message}
    return 400, {"error": message}


async def handler(context: Any, event: Any) -> Any:
    server: ModelServer = context.user_data.server
    path = event.path or "/"
    method = (event.method or "POST").upper()
    if method == "GET":
        if path in ("/ping", "/health"):
            return "\n"
        if path == "/version":
            return "tickrun-model-server-1.0.0"
        return server.info()
    mlflow = path.rstrip("/").endswith("/invocations")
    try:
        protocol, x, proba = server.parse(path, event.body, event.content_type or "")
        if x.shape[0] <= INLINE_ROWS:
            return server.respond(protocol, x, proba, event.id)
        return await asyncio.to_thread(server.respond, protocol, x, proba, event.id)
    except RequestError as exc:
        return _error(mlflow, str(exc))
