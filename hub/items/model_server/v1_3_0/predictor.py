"""model_server 1.3.0: request parsing and the model wrapper (:class:`Predictor`), pure code
that takes no run context. Unchanged from 1.1.0 (split out so each file stays small).

Why it is fast: rows go straight into a float64 matrix in the model's feature order (no pandas
per request), scikit-learn is called on that matrix with its per-call validation relaxed (the
server checks finiteness itself), XGBoost is called through ``inplace_predict`` on one thread.
Scalers and linear models get numpy twins, and one-row requests to them a pure-Python scorer;
one-row requests to XGBoost models walk all trees at once in numpy
(``tickrun.functions.runs.trees``); every twin is checked against the model on probe rows when
it loads and dropped if it disagrees.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
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


def _rows_from_columns(
    columns: Mapping[str, Sequence[Any]], features: Sequence[str]
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
        return parse_mlflow(
            {"dataframe_split": {"columns": header, "data": data}}, "application/json", features
        )
    if not isinstance(body, Mapping):
        raise RequestError(
            "the body must be a JSON object with one of dataframe_split, "
            "dataframe_records, instances, inputs"
        )
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in body]
    if len(keys) != 1:
        raise RequestError(
            "the body must have exactly one of dataframe_split, "
            "dataframe_records, instances, inputs"
        )
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


# scikit-learn spends ~100 µs per call validating a 1-row input; the arithmetic of a scaler or
# a linear model is ~1 µs. Those estimators are therefore "compiled" to the same numpy
# expressions, and every compiled path is checked against scikit-learn on probe rows at load
# time: any disagreement and the server keeps using scikit-learn for that model.


def _compile_step(est: Any) -> Any:
    name = type(est).__name__
    if name == "StandardScaler":
        mean = est.mean_ if getattr(est, "with_mean", True) else None
        scale = est.scale_ if getattr(est, "with_std", True) else None

        def transform(x: np.ndarray) -> np.ndarray:
            if mean is not None:
                x = x - mean
            if scale is not None:
                x = x / scale
            return x

        return transform
    return None


def _compile_final(est: Any) -> tuple[Any, Any]:
    """(predict, predict_proba) in numpy for linear models, else (None, None)."""
    coef = getattr(est, "coef_", None)
    intercept = getattr(est, "intercept_", None)
    if coef is None or intercept is None or not isinstance(coef, np.ndarray):
        return None, None
    name = type(est).__name__
    classes = getattr(est, "classes_", None)
    if classes is None:
        if name not in ("LinearRegression", "Ridge", "Lasso", "ElasticNet"):
            return None, None

        def regress(x: np.ndarray) -> np.ndarray:
            return x @ coef.T + intercept

        return regress, None
    if name != "LogisticRegression" or len(classes) != 2 or coef.shape[0] != 1:
        return None, None
    w = coef[0]
    b = float(np.ravel(intercept)[0])

    def classify(x: np.ndarray) -> np.ndarray:
        return classes[(x @ w + b > 0).astype(np.int64)]

    def proba(x: np.ndarray) -> np.ndarray:
        p1 = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        return np.column_stack([1.0 - p1, p1])

    return classify, proba


def compile_model(model: Any) -> tuple[Any, Any]:
    """(predict, predict_proba) numpy closures equivalent to ``model``'s, or Nones."""
    steps = [
        s
        for _n, s in getattr(model, "steps", [("", model)])
        if s is not None and s != "passthrough"
    ]
    transforms = [_compile_step(s) for s in steps[:-1]]
    if any(t is None for t in transforms):
        return None, None
    predict, proba = _compile_final(steps[-1])
    if predict is None:
        return None, None

    def chain(fn: Any) -> Any:
        if fn is None:
            return None

        def run(x: np.ndarray) -> np.ndarray:
            for t in transforms:
                x = t(x)
            return fn(x)

        return run

    return chain(predict), chain(proba)


def compile_row(model: Any) -> Any:
    """For the commonest request, one row: a pure-Python scorer (no numpy call overhead) for a
    [StandardScaler →] binary LogisticRegression or linear regressor. Returns a function
    row → (prediction, P(last class) or None), or None. Verified like the numpy twins."""
    steps = [
        s
        for _n, s in getattr(model, "steps", [("", model)])
        if s is not None and s != "passthrough"
    ]
    if len(steps) > 2 or (len(steps) == 2 and type(steps[0]).__name__ != "StandardScaler"):
        return None
    final = steps[-1]
    coef = getattr(final, "coef_", None)
    intercept = getattr(final, "intercept_", None)
    if not isinstance(coef, np.ndarray) or intercept is None:
        return None
    classes = getattr(final, "classes_", None)
    name = type(final).__name__
    if classes is not None:
        if name != "LogisticRegression" or len(classes) != 2 or coef.shape[0] != 1:
            return None
        weights = coef[0].tolist()
    else:
        if name not in ("LinearRegression", "Ridge", "Lasso", "ElasticNet") or coef.ndim != 1:
            return None
        weights = coef.tolist()
    bias = float(np.ravel(intercept)[0])
    n = len(weights)
    scaler = steps[0] if len(steps) == 2 else None
    mean = scaler.mean_.tolist() if scaler is not None and scaler.with_mean else [0.0] * n
    scale = scaler.scale_.tolist() if scaler is not None and scaler.with_std else [1.0] * n
    labels = np.asarray(classes).tolist() if classes is not None else None
    terms = list(zip(mean, scale, weights, strict=True))

    def score(row: Sequence[Any]) -> tuple[Any, float | None]:
        d = bias
        for v, (m, sd, w) in zip(row, terms, strict=True):
            d += (float(v) - m) / sd * w
        if not math.isfinite(d):
            raise RequestError("feature values must be finite numbers (no NaN/inf)")
        if labels is None:
            return d, None
        if d >= 0:
            p1 = 1.0 / (1.0 + math.exp(-d))
        else:
            e = math.exp(d)
            p1 = e / (1.0 + e)
        return labels[1] if d > 0 else labels[0], p1

    return score


def _probe_rows(model: Any, n_features: int, rows: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    first = getattr(model, "steps", [("", model)])[0][1]
    mean = getattr(first, "mean_", None)
    scale = getattr(first, "scale_", None)
    x = rng.standard_normal((rows, n_features))
    if mean is not None and scale is not None and len(mean) == n_features:
        x = x * scale + mean  # rows like the training data, so both classes occur
    return x


def _verified(model: Any, n_features: int | None) -> tuple[Any, Any]:
    if n_features is None:
        return None, None
    predict, proba = compile_model(model)
    if predict is None:
        return None, None
    x = _probe_rows(model, n_features)
    try:
        if not np.array_equal(np.asarray(model.predict(x)), predict(x)):
            return None, None
        if proba is not None and not np.allclose(
            model.predict_proba(x), proba(x), rtol=1e-9, atol=1e-12
        ):
            proba = None
    except Exception:  # an exotic estimator: keep scikit-learn
        return None, None
    return predict, proba


def _verified_row(model: Any, n_features: int | None) -> Any:
    if n_features is None:
        return None
    score = compile_row(model)
    if score is None:
        return None
    x = _probe_rows(model, n_features)
    try:
        expected = np.asarray(model.predict(x)).tolist()
        got = [score(row) for row in x.tolist()]
        if [g[0] for g in got] != expected:
            return None
        if got[0][1] is not None and not np.allclose(
            model.predict_proba(x)[:, -1], [g[1] for g in got], rtol=1e-9, atol=1e-12
        ):
            return None
    except Exception:
        return None
    return score


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
        self.feature_names: list[str] | None = (
            [str(n) for n in names] if names is not None else None
        )
        n = getattr(model, "n_features_in_", None)
        self.n_features = (
            len(self.feature_names) if self.feature_names else (int(n) if n is not None else None)
        )
        self.framework = "xgboost" if booster is not None else type(model).__module__.split(".")[0]
        self.classes = getattr(model, "classes_", None)
        self._booster = booster
        self._compiled: tuple[Any, Any] = (None, None)
        self.row_scorer: Any = None
        if booster is not None:
            booster.set_param({"nthread": 1})  # one row: threads cost more than they give
            self._fast = None
            if self.n_features is not None and booster is not model:
                from tickrun.functions.runs.trees import compile_xgboost_row

                self.row_scorer = compile_xgboost_row(model, self.n_features)
        else:
            self._fast = _strip_feature_names(model)
            self._compiled = _verified(self._fast, self.n_features)
            self.row_scorer = _verified_row(self._fast, self.n_features)
        self.is_classifier = self.classes is not None

    @property
    def compiled(self) -> bool:
        return self._compiled[0] is not None

    def predict(self, x: np.ndarray) -> list[Any]:
        if self._booster is not None:
            raw = np.asarray(self._booster.inplace_predict(x, validate_features=False))
            if not self.is_classifier or self._booster is self.model:
                return raw.tolist()
            idx = (raw > 0.5).astype(np.int64) if raw.ndim == 1 else raw.argmax(axis=1)
            return np.asarray(self.classes)[idx].tolist()
        if self._compiled[0] is not None:
            return np.asarray(self._compiled[0](x)).tolist()
        return np.asarray(self._fast.predict(x)).tolist()

    def predict_proba(self, x: np.ndarray) -> list[Any] | None:
        if not self.is_classifier:
            return None
        if self._booster is not None:
            raw = np.asarray(self._booster.inplace_predict(x, validate_features=False))
            if raw.ndim == 1:
                raw = np.column_stack([1.0 - raw, raw])
            return raw.tolist()
        if self._compiled[1] is not None:
            return np.asarray(self._compiled[1](x)).tolist()
        proba = getattr(self._fast, "predict_proba", None)
        return np.asarray(proba(x)).tolist() if proba is not None else None


def relax_sklearn_checks() -> None:
    """Inputs are validated here once, so scikit-learn need not re-check every call."""
    try:
        import sklearn
    except ImportError:
        return
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
