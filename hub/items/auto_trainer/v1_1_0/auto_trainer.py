"""auto_trainer 1.1.0 — train, evaluate and predict with any scikit-learn or XGBoost estimator.

``model_class`` is an import path (``sklearn.ensemble.RandomForestClassifier``,
``xgboost.XGBClassifier``). Extra keyword arguments follow MLRun's convention: ``CLASS_x`` goes to
the estimator's constructor, ``FIT_x`` to ``fit``, ``PREDICT_x`` to ``predict``.

What 1.1.0 changes (1.0.0's defaults leaked the future into the scores):

* **Targets are never features.** A column leaves the features when it is a label column, is
  listed in the dataset's metadata ``targets`` (``log_dataset(..., meta={"targets": [...]})``),
  is one of market_features' targets (``label``, ``future_return``), or its name starts with
  ``future_``, ``fwd_`` or ``forward_`` (any case): forward-looking by convention.
  ``keep_columns`` overrides the name rule only. The detected time column is not a feature either.
* **A time series is split in time, purged.** A dataset is a time series when it has a time
  index (metadata ``time_column``, the ``time_column`` parameter, a DatetimeIndex, a datetime
  column, or a column named timestamp/time/datetime/date/open_time) or a forward label
  (metadata ``label_horizon_bars`` or a forward-named column). Its rows must be in time order:
  unsorted or duplicated timestamps are refused, not sorted, since a label computed over rows in
  the wrong order is wrong already. ``split="auto"`` (default) then tests on the last rows, and
  ``horizon`` rows are dropped between train and test (and around the validation split) so no
  training label looks into the test period: horizon = metadata ``label_horizon_bars`` or the
  ``label_horizon`` parameter (the larger when both are given), else the h for which
  ``future_return`` equals the h-bar forward return of ``close`` (or of the price rebuilt from
  ``ret_1``: market_features 1.1 output, which logs no metadata), else 1 bar. A random split of a
  time series happens only with ``split="random"`` (1.0's ``time_ordered=False`` or
  ``stratify=True`` are refused on one). A plain table keeps the random split, stratified for
  classifiers. A given ``test_set`` replaces the split; the last ``horizon`` rows are purged.
* **Headline metrics beside baselines**: ``auc``, ``log_loss``, ``base_rate`` (the test set's
  positive rate), ``majority_accuracy`` (always the training majority class) and
  ``baseline_log_loss`` (the training class frequencies as the forecast); regressors get
  ``baseline_mae``/``baseline_rmse``/``baseline_r2_score`` (the training mean as the forecast).
  With ``validation_size`` > 0 the same metrics of the validation split come as ``validation_*``.

The pure pieces (:func:`feature_plan`, :func:`time_index`, :func:`split_rows`,
:func:`compute_metrics`, :func:`make_plots`) take no run context, so they are tested and
benchmarked on their own; the handlers wire them to the run context.
"""

from __future__ import annotations

import importlib
import inspect
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

CLASS_PREFIX = "CLASS_"
FIT_PREFIX = "FIT_"
PREDICT_PREFIX = "PREDICT_"
ALIASES = {
    "LogisticRegression": "sklearn.linear_model.LogisticRegression",
    "LinearRegression": "sklearn.linear_model.LinearRegression",
    "RandomForestClassifier": "sklearn.ensemble.RandomForestClassifier",
    "RandomForestRegressor": "sklearn.ensemble.RandomForestRegressor",
    "XGBClassifier": "xgboost.XGBClassifier",
    "XGBRegressor": "xgboost.XGBRegressor",
}
KNOWN_TARGETS = ("label", "future_return")  # market_features' targets
FORWARD_PREFIXES = ("future_", "fwd_", "forward_")
TIME_NAMES = ("timestamp", "time", "datetime", "date", "open_time")
SPLITS = ("auto", "time", "random")
VALIDATION_PREFIX = "validation_"


# --- columns: features, targets, time ---------------------------------------------------------


def split_kwargs(
    kwargs: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(class kwargs, fit kwargs, predict kwargs) from MLRun-style prefixed keys."""
    cls: dict[str, Any] = {}
    fit: dict[str, Any] = {}
    pred: dict[str, Any] = {}
    for key, value in kwargs.items():
        for prefix, target in ((CLASS_PREFIX, cls), (FIT_PREFIX, fit), (PREDICT_PREFIX, pred)):
            if key.startswith(prefix):
                target[key[len(prefix) :]] = value
                break
        else:
            raise TypeError(
                f"unexpected parameter {key!r}: extra parameters must start with "
                f"{CLASS_PREFIX}, {FIT_PREFIX} or {PREDICT_PREFIX}"
            )
    return cls, fit, pred


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def dataset_meta(dataset: Any) -> dict[str, Any]:
    """The metadata a producer logged with the dataset (``dataset.meta.meta``), or {}."""
    record = getattr(dataset, "meta", None)
    meta = getattr(record, "meta", None)
    return dict(meta) if isinstance(meta, Mapping) else {}


def is_forward_name(column: Any) -> bool:
    return str(column).lower().startswith(FORWARD_PREFIXES)


def target_reasons(
    columns: Sequence[Any],
    label_columns: Any,
    meta_targets: Any = (),
    keep_columns: Any = (),
) -> dict[str, str]:
    """Column → why it is a target (so never a feature), for the columns present."""
    labels, meta_t, keep = as_list(label_columns), as_list(meta_targets), set(as_list(keep_columns))
    out: dict[str, str] = {}
    for col in map(str, columns):
        if col in labels:
            out[col] = "label column"
        elif col in meta_t:
            out[col] = "target in the dataset's metadata"
        elif col in KNOWN_TARGETS:
            out[col] = "market_features target"
        elif is_forward_name(col) and col not in keep:
            out[col] = "forward-looking name (" + "/".join(p + "*" for p in FORWARD_PREFIXES) + ")"
    refused = sorted(keep & set(out))
    if refused:
        raise ValueError(
            f"keep_columns cannot keep {refused}: {out[refused[0]]}; it only overrides the "
            "forward-name rule (" + ", ".join(p + "*" for p in FORWARD_PREFIXES) + ")"
        )
    return out


@dataclass
class FeaturePlan:
    features: list[str]
    labels: list[str]  # present in the frame (all of them, or none)
    dropped_targets: dict[str, str]  # target column → reason (label columns excluded)


def feature_plan(
    df: pd.DataFrame,
    label_columns: Any,
    drop_columns: Any = None,
    *,
    meta_targets: Any = (),
    keep_columns: Any = (),
    time_column: str | None = None,
) -> FeaturePlan:
    """Which columns are features: numeric ones that are neither targets, dropped, nor the time."""
    labels = as_list(label_columns)
    reasons = target_reasons(df.columns, labels, meta_targets, keep_columns)
    drops = set(as_list(drop_columns)) | set(reasons) | ({time_column} if time_column else set())
    rest = df[[c for c in df.columns if str(c) not in drops]]
    # Ids and text are not features a model can use: non-numeric columns are left out.
    features = [str(c) for c in rest.select_dtypes(include=["number", "bool"]).columns]
    present = [c for c in labels if c in df.columns]
    return FeaturePlan(
        features=features,
        labels=present if len(present) == len(labels) else [],
        dropped_targets={c: r for c, r in reasons.items() if c not in labels},
    )


def _iso_with_offset(s: pd.Series) -> pd.Series | None:
    """ISO 8601 strings with a UTC offset (market_features' timestamps) through Arrow's parser,
    several times faster than pandas'; None for anything else (naive or other formats)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        parsed = pc.cast(pa.array(s, from_pandas=True), pa.timestamp("us", tz="UTC"))
    except Exception:  # no pyarrow, or not offset-qualified ISO text: pandas decides
        return None
    return pd.Series(parsed.to_pandas())


def _as_times(values: pd.Series, name: str) -> pd.Series:
    s = values.reset_index(drop=True)
    try:
        if pd.api.types.is_datetime64_any_dtype(s):
            return s
        if pd.api.types.is_numeric_dtype(s):
            # epoch numbers: seconds, milliseconds (Binance open_time), µs or ns by magnitude
            top = float(np.nanmax(np.abs(s.to_numpy(dtype=float)))) if len(s) else 0.0
            unit = "s" if top < 1e11 else "ms" if top < 1e14 else "us" if top < 1e17 else "ns"
            return pd.to_datetime(s, unit=unit, utc=True)
        fast = _iso_with_offset(s)
        if fast is not None:
            return fast
        with warnings.catch_warnings():  # "could not infer format": the error says enough
            warnings.simplefilter("ignore", UserWarning)
            return pd.to_datetime(s, utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"time column {name!r} does not parse as timestamps ({exc}); name the right one "
            "with time_column, or pass split='random' for a table that is not a time series"
        ) from exc


def time_index(
    df: pd.DataFrame, meta: Mapping[str, Any] | None = None, time_column: str | None = None
) -> tuple[str | None, pd.Series | None]:
    """(name, times by row) of the dataset's time index, or (None, None) for a plain table.

    First match: the ``time_column`` argument, metadata ``time_column``, a DatetimeIndex, a
    datetime column, a column named timestamp/time/datetime/date/open_time (any case)."""
    name = time_column or (meta or {}).get("time_column")
    if name:
        if name in df.columns:
            return str(name), _as_times(df[name], str(name))
        if df.index.name == name:
            return str(name), _as_times(df.index.to_series(), str(name))
        raise ValueError(f"time column {name!r} is not in the dataset: {list(df.columns)[:20]}")
    if isinstance(df.index, pd.DatetimeIndex):
        return None, pd.Series(df.index)
    for col in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[col]):
            return str(col), df[col].reset_index(drop=True)
    lower = {str(c).lower(): c for c in df.columns}
    for candidate in TIME_NAMES:
        if candidate in lower:
            col = lower[candidate]
            return str(col), _as_times(df[col], str(col))
    return None, None


def check_time_order(times: pd.Series, what: str = "dataset") -> None:
    """Refuse missing, duplicated or unsorted timestamps: a time split needs rows in time order."""
    if times.isna().any():
        raise ValueError(f"the {what} has {int(times.isna().sum())} row(s) without a timestamp")
    step = np.diff(pd.DatetimeIndex(times).asi8)
    if (step == 0).any():
        first = times.iloc[int(np.argmax(step == 0))]
        raise ValueError(
            f"the {what} has duplicated timestamps (first {first}): one series per table — train "
            "per symbol, or pass split='random' if the rows really are exchangeable"
        )
    if (step < 0).any():
        at = int(np.argmax(step < 0)) + 1
        raise ValueError(
            f"the {what} is not sorted by time (row {at} at {times.iloc[at]} comes after "
            f"{times.iloc[at - 1]}); sort it (df.sort_values(<time column>)) and recompute any "
            "label before training — or, if that is not the time, name the right column with "
            "time_column"
        )


# --- split ------------------------------------------------------------------------------------


def choose_split(
    split: Any = "auto",
    *,
    time_series: bool,
    why: str = "",
    time_ordered: Any = None,
    stratify: Any = None,
) -> str:
    """``"time"`` or ``"random"``; a random split of a time series only when asked for by name.

    ``time_ordered`` is 1.0's parameter: true means ``split="time"``; false (or ``stratify``)
    asks for a random split without naming it, which a time series refuses."""
    mode = str(split or "auto").strip().lower()
    if mode not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    implicit_random = False
    if time_ordered is not None:
        ordered = _flag(time_ordered)
        if (mode == "time" and not ordered) or (mode == "random" and ordered):
            raise ValueError(f"time_ordered={ordered} contradicts split={mode!r}; pass split only")
        if mode == "auto":
            mode, implicit_random = ("time", False) if ordered else ("auto", True)
    if stratify is not None and _flag(stratify):
        if mode == "time":
            raise ValueError("stratify applies to a random split only (split='random')")
        implicit_random = implicit_random or mode == "auto"
    if mode == "auto" and implicit_random and time_series:
        raise ValueError(
            f"refusing a random split of a time series ({why}): rows next to each other share "
            "information and a forward label overlaps its neighbours, so random test scores are "
            "optimistic. Leave split='auto' for a time-ordered, purged split, or pass "
            "split='random' to split at random anyway"
        )
    if mode == "auto":
        return "time" if time_series and not implicit_random else "random"
    return mode


def series_evidence(
    df: pd.DataFrame, meta: Mapping[str, Any], time_name: str | None, times: Any
) -> list[str]:
    """Why the dataset is a time series (empty for a plain table)."""
    why = []
    if times is not None:
        why.append(f"time index {time_name or 'DatetimeIndex'!r}")
    if meta.get("label_horizon_bars"):
        why.append(f"metadata label_horizon_bars={meta['label_horizon_bars']}")
    forward = [str(c) for c in df.columns if is_forward_name(c)]
    if forward:
        why.append(f"forward label column(s) {', '.join(forward)}")
    return why


def infer_horizon(
    df: pd.DataFrame, column: str = "future_return", max_bars: int = 1000
) -> int | None:
    """The h for which ``column`` equals price[t+h]/price[t] - 1 (market_features' forward
    return), the price being ``close`` or, in a features frame, rebuilt from ``ret_1``; checked
    on a sample of rows. None when those columns are missing or no h fits."""
    if column not in df.columns or len(df) < 3:
        return None
    if "close" in df.columns:
        price = df["close"].to_numpy(dtype=float)
    elif "ret_1" in df.columns:
        price = np.cumprod(1.0 + df["ret_1"].to_numpy(dtype=float))
    else:
        return None
    forward = df[column].to_numpy(dtype=float)
    for h in range(1, min(max_bars, len(df) - 1) + 1):
        rows = np.linspace(0, len(df) - 1 - h, num=min(64, len(df) - h), dtype=int)
        if np.allclose(forward[rows], price[rows + h] / price[rows] - 1.0, rtol=1e-6, atol=1e-9):
            return h
    return None


def label_horizon_bars(
    meta: Mapping[str, Any], label_horizon: Any, time_series: bool, inferred: int | None = None
) -> int:
    """Bars the label looks ahead: the larger of metadata and parameter (purging more never
    leaks), else the horizon read off a forward-return column, else 1 for a time series."""
    given = [int(v) for v in (meta.get("label_horizon_bars"), label_horizon) if v is not None]
    if any(h < 0 for h in given):
        raise ValueError(f"label horizon must be >= 0 bars, got {given}")
    if given:
        return max(given)
    return inferred if inferred and time_series else int(time_series)


@dataclass
class Split:
    mode: str  # time | random
    train: np.ndarray  # row positions
    validation: np.ndarray
    test: np.ndarray
    purge_bars: int  # rows dropped before the validation and before the test split
    purged_rows: int


def split_rows(
    n: int,
    *,
    mode: str = "time",
    test_size: float = 0.2,
    validation_size: float = 0.0,
    horizon: int = 0,
    stratify_by: np.ndarray | None = None,
    random_state: int | None = 42,
) -> Split:
    """Row positions: time — train | purge | validation | purge | test, in order; random — a
    (stratified) random sample for test, then for validation out of the rest, no purge."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"train_test_split_size must be in (0, 1), got {test_size}")
    if not 0.0 <= validation_size < 1.0 or test_size + validation_size >= 1.0:
        raise ValueError(
            f"validation_size must be in [0, 1) and leave rows to train on (test {test_size}, "
            f"validation {validation_size})"
        )
    n_test, n_val = round(n * test_size), round(n * validation_size)
    if mode == "time":
        gaps = horizon * (2 if n_val else 1)
        n_train = n - n_test - n_val - gaps
        if n_test < 1 or n_train < 2 or (validation_size > 0 and n_val < 1):
            raise ValueError(
                f"{n} rows are too few for this split (test {n_test}, validation {n_val}, "
                f"purge {gaps})"
            )
        test = np.arange(n - n_test, n)
        val = np.arange(n - n_test - horizon - n_val, n - n_test - horizon)
        return Split(mode, np.arange(n_train), val, test, horizon, gaps)
    from sklearn.model_selection import train_test_split

    rows = np.arange(n)
    rest, test = train_test_split(
        rows, test_size=n_test, random_state=random_state, stratify=stratify_by
    )
    val = np.arange(0)
    if n_val:
        strat = None if stratify_by is None else stratify_by[rest]
        rest, val = train_test_split(
            rest, test_size=n_val, random_state=random_state, stratify=strat
        )
    return Split(mode, np.sort(rest), np.sort(val), np.sort(test), 0, 0)


# --- model and metrics --------------------------------------------------------------------------


def create_model(
    model_class: str, class_kwargs: Mapping[str, Any] | None = None, *, scale: bool = False
) -> Any:
    path = ALIASES.get(model_class, model_class)
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(
            f"model_class {model_class!r} is not an import path such as "
            "sklearn.linear_model.LogisticRegression"
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import model_class {path!r}: {exc}") from exc
    model = cls(**dict(class_kwargs or {}))
    if scale:
        # Linear models on raw features (returns ~1e-3, RSI ~50) converge slowly or not at all.
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), model)
    return model


def final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def framework_of(model: Any) -> str:
    root = type(final_estimator(model)).__module__.split(".")[0]
    if getattr(model, "steps", None):
        return "sklearn"  # a pipeline is pickled as a whole
    return {"sklearn": "sklearn", "xgboost": "xgboost"}.get(root, root)


def is_classifier(model: Any) -> bool:
    from sklearn.base import is_classifier as sk_is_classifier

    try:
        return bool(sk_is_classifier(model))
    except Exception:  # not a scikit-learn-style estimator
        return hasattr(model, "predict_proba")


def _target(y: pd.DataFrame) -> Any:
    return y.iloc[:, 0].to_numpy() if y.shape[1] == 1 else y.to_numpy()


def fit(
    model: Any, x: pd.DataFrame, y: pd.DataFrame, fit_kwargs: Mapping[str, Any] | None = None
) -> Any:
    model.fit(x, _target(y), **dict(fit_kwargs or {}))
    return model


def compute_metrics(
    model: Any,
    x: pd.DataFrame,
    y: pd.DataFrame,
    predict_kwargs: Mapping[str, Any] | None = None,
    *,
    y_train: pd.DataFrame | None = None,
) -> dict[str, float]:
    """Metrics on (x, y) beside naive baselines fitted on ``y_train`` (default: on y itself)."""
    from sklearn import metrics as m

    target = _target(y)
    reference = target if y_train is None else _target(y_train)
    pred = model.predict(x, **dict(predict_kwargs or {}))
    if not is_classifier(model):
        mse = float(m.mean_squared_error(target, pred))
        const = np.broadcast_to(np.mean(reference, axis=0), np.shape(target))
        base_mse = float(m.mean_squared_error(target, const))
        return {
            "mae": float(m.mean_absolute_error(target, pred)),
            "mse": mse,
            "rmse": math.sqrt(mse),
            "r2_score": float(m.r2_score(target, pred)),
            "baseline_mae": float(m.mean_absolute_error(target, const)),
            "baseline_rmse": math.sqrt(base_mse),
            "baseline_r2_score": float(m.r2_score(target, const)),
        }
    present = np.unique(target)
    classes = np.asarray(getattr(model, "classes_", np.unique(reference)))
    binary = len(classes) <= 2
    avg = "binary" if binary and len(np.union1d(present, classes)) <= 2 else "macro"
    values, counts = np.unique(reference, return_counts=True)
    majority = values[int(np.argmax(counts))]
    out = {
        "accuracy": float(m.accuracy_score(target, pred)),
        "f1_score": float(m.f1_score(target, pred, average=avg, zero_division=0)),
        "precision_score": float(m.precision_score(target, pred, average=avg, zero_division=0)),
        "recall_score": float(m.recall_score(target, pred, average=avg, zero_division=0)),
        "majority_accuracy": float(np.mean(target == majority)),
    }
    if binary:
        out["base_rate"] = float(np.mean(target == classes[-1]))
    freq = np.array([np.mean(reference == c) for c in classes], dtype=float)
    if np.isin(present, classes).all():
        # the forecast that knows nothing but the training base rate
        base = np.clip(np.tile(freq, (len(target), 1)), 1e-15, 1.0)
        out["baseline_log_loss"] = float(m.log_loss(target, base, labels=classes))
    if hasattr(model, "predict_proba") and np.isin(present, classes).all():
        proba = model.predict_proba(x)
        out["log_loss"] = float(m.log_loss(target, proba, labels=classes))
        if len(present) > 1:
            out["auc"] = float(
                m.roc_auc_score(target, proba[:, 1])
                if binary
                else m.roc_auc_score(target, proba, multi_class="ovr", labels=classes)
            )
    return out


def feature_importance(model: Any, columns: Sequence[str]) -> pd.Series | None:
    model = final_estimator(model)
    values = getattr(model, "feature_importances_", None)
    if values is None:
        coef = getattr(model, "coef_", None)
        if coef is None:
            return None
        values = np.abs(np.atleast_2d(coef)).mean(axis=0)
    series = pd.Series(np.asarray(values, dtype=float), index=list(columns))
    return series.sort_values(ascending=False)


def make_plots(
    model: Any, x: pd.DataFrame, y: pd.DataFrame, *, max_features: int = 25
) -> dict[str, Any]:
    """Matplotlib figures keyed by artifact name (caller closes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as m
    from sklearn.calibration import calibration_curve

    figs: dict[str, Any] = {}
    target = _target(y)
    pred = model.predict(x)
    if is_classifier(model) and target.ndim == 1:
        fig, ax = plt.subplots(figsize=(5, 4))
        m.ConfusionMatrixDisplay.from_predictions(target, pred, ax=ax, colorbar=False)
        ax.set_title("confusion matrix (test set)")
        figs["confusion-matrix"] = fig
        if hasattr(model, "predict_proba") and len(np.unique(target)) == 2:
            proba = model.predict_proba(x)[:, 1]
            fig, ax = plt.subplots(figsize=(5, 4))
            m.RocCurveDisplay.from_predictions(target, proba, ax=ax)
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
            ax.set_title("ROC curve (test set)")
            figs["roc-curves"] = fig
            frac, mean_pred = calibration_curve(target, proba, n_bins=10, strategy="quantile")
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.plot(mean_pred, frac, marker="o", label="model")
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
            lo = float(min(mean_pred.min(), frac.min()))
            hi = float(max(mean_pred.max(), frac.max()))
            pad = max(0.02, (hi - lo) * 0.1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_xlabel("mean predicted probability")
            ax.set_ylabel("fraction of positives")
            ax.set_title("calibration (test set)")
            ax.legend()
            figs["calibration-curve"] = fig
    else:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(target, pred, s=4, alpha=0.4)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("predicted vs actual (test set)")
        figs["prediction-scatter"] = fig
    importance = feature_importance(model, list(x.columns))
    if importance is not None:
        top = importance.head(max_features)[::-1]
        fig, ax = plt.subplots(figsize=(6, max(3.0, 0.25 * len(top) + 1)))
        ax.barh(top.index, top.to_numpy())
        ax.set_title("feature importance")
        fig.tight_layout()
        figs["feature-importance"] = fig
    return figs


def predictions_frame(
    model: Any,
    x: pd.DataFrame,
    *,
    proba: bool = False,
    label_columns: Any = "label",
    predict_kwargs: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    labels = as_list(label_columns) or ["label"]
    pred = np.asarray(model.predict(x, **dict(predict_kwargs or {})))
    out = pd.DataFrame(index=x.index)
    if pred.ndim == 1:
        out[f"predicted_{labels[0]}"] = pred
    else:
        for i, col in enumerate(labels[: pred.shape[1]]):
            out[f"predicted_{col}"] = pred[:, i]
    if proba and hasattr(model, "predict_proba"):
        p = model.predict_proba(x)
        classes = getattr(model, "classes_", range(p.shape[1]))
        for i, cls in enumerate(classes):
            out[f"proba_{cls}"] = p[:, i]
    return out


# --- run-context wiring ----------------------------------------------------------------------


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _frame(dataset: Any) -> pd.DataFrame:
    return dataset.as_df() if hasattr(dataset, "as_df") else dataset


def _load_model(uri: Any) -> Any:
    if not isinstance(uri, str):  # a DataItem or an already-loaded model
        uri = getattr(uri, "url", uri)
        if not isinstance(uri, str):
            return uri
    from tickrun.functions.runs import load_model

    loaded = load_model(uri)
    return loaded[0] if isinstance(loaded, tuple) else loaded


def _log_figures(context: Any, figs: Mapping[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for key, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        context.log_artifact(key, body=buf.getvalue(), kind="plot", format="png")


def _span(prefix: str, times: pd.Series | None, rows: np.ndarray) -> dict[str, str]:
    if times is None or not len(rows):
        return {}
    t = times.iloc[rows]
    return {f"{prefix}_start": t.iloc[0].isoformat(), f"{prefix}_end": t.iloc[-1].isoformat()}


def _given_test_set(
    df: pd.DataFrame,
    times: pd.Series | None,
    test_df: pd.DataFrame,
    test_meta: Mapping[str, Any],
    time_name: str | None,
    plan: FeaturePlan,
    mode: str,
    horizon: int,
) -> tuple[Split, pd.Series | None]:
    """All of the dataset trains but its last ``horizon`` rows, whose labels look into the test
    period; a time-ordered test set must start after the dataset ends."""
    missing = [c for c in [*plan.features, *plan.labels] if c not in test_df.columns]
    if missing:
        raise ValueError(f"the test set lacks column(s) {missing[:10]}")
    _name, test_times = time_index(test_df, test_meta, time_name)
    if mode == "time" and times is not None and test_times is not None:
        check_time_order(test_times, "test set")
        if test_times.iloc[0] <= times.iloc[-1]:
            raise ValueError(
                f"the test set starts at {test_times.iloc[0]}, before the dataset ends "
                f"({times.iloc[-1]}): a time-ordered test set must come after the training rows"
            )
    n_train = len(df) - horizon
    if n_train < 2:
        raise ValueError(f"{len(df)} rows are too few to purge {horizon} bars")
    empty = np.arange(0)
    parts = Split("given", np.arange(n_train), empty, np.arange(len(test_df)), horizon, horizon)
    return parts, test_times


def train(
    context: Any,
    dataset: Any = None,
    model_class: str = "sklearn.linear_model.LogisticRegression",
    label_columns: Any = "label",
    drop_columns: Any = None,
    model_name: str = "model",
    test_set: Any = None,
    train_test_split_size: float = 0.2,
    validation_size: float = 0.0,
    split: str = "auto",
    label_horizon: Any = None,
    time_column: Any = None,
    keep_columns: Any = None,
    random_state: int | None = 42,
    stratify: Any = None,
    time_ordered: Any = None,
    test_set_key: str = "test_set",
    plots: Any = True,
    scale: Any = False,
    **kwargs: Any,
) -> None:
    """Split (or use the ``test_set`` input), fit, evaluate on the test set, and log metrics,
    baselines, the split, plots, the test set and the model."""
    if dataset is None:
        raise ValueError("train needs a dataset input")
    class_kwargs, fit_kwargs, predict_kwargs = split_kwargs(kwargs)
    meta = dataset_meta(dataset)
    df = _frame(dataset)
    try:
        time_name, times = time_index(df, meta, time_column or None)
    except ValueError:
        # a time-like name over values that are no timestamps: only split=random gets past it
        if time_column or str(split).strip().lower() != "random":
            raise
        time_name, times = None, None
    plan = feature_plan(
        df,
        label_columns,
        drop_columns,
        meta_targets=meta.get("targets"),
        keep_columns=keep_columns,
        time_column=time_name,
    )
    if not plan.labels:
        raise ValueError(f"label column(s) {as_list(label_columns)} not in the dataset")
    if not plan.features:
        raise ValueError("no numeric feature column left once targets and drops are removed")
    if plan.dropped_targets:
        context.logger.info_with(
            "target columns dropped from the features", columns=plan.dropped_targets
        )
    why = series_evidence(df, meta, time_name, times)
    model = create_model(model_class, class_kwargs, scale=_flag(scale))
    classifier = is_classifier(model)
    mode = choose_split(
        split,
        time_series=bool(why),
        why="; ".join(why),
        time_ordered=time_ordered,
        stratify=stratify,
    )
    horizon = 0
    if mode == "time":
        horizon = label_horizon_bars(meta, label_horizon, bool(why), infer_horizon(df))
    if mode == "time" and times is not None:
        check_time_order(times)
    if mode == "random" and why:
        context.logger.warn_with(
            "random split of a time series, as asked: test scores will be optimistic",
            evidence="; ".join(why),
        )
    x, y = df[plan.features], df[plan.labels]
    val_size = float(validation_size or 0.0)
    if test_set is not None:
        if val_size > 0:
            raise ValueError("validation_size needs the split: leave test_set out to use it")
        test_df = _frame(test_set)
        parts, test_times = _given_test_set(
            df, times, test_df, dataset_meta(test_set), time_name, plan, mode, horizon
        )
        x_test, y_test = test_df[plan.features], test_df[plan.labels]
        test_rows, test_spans = test_df, _span("test", test_times, parts.test)
    else:
        do_stratify = classifier if stratify is None else _flag(stratify)
        parts = split_rows(
            len(df),
            mode=mode,
            test_size=float(train_test_split_size),
            validation_size=val_size,
            horizon=horizon,
            stratify_by=_target(y) if do_stratify and mode == "random" else None,
            random_state=None if random_state is None else int(random_state),
        )
        x_test, y_test = x.iloc[parts.test], y.iloc[parts.test]
        test_rows, test_spans = df.iloc[parts.test], _span("test", times, parts.test)
    x_train, y_train = x.iloc[parts.train], y.iloc[parts.train]
    split_info: dict[str, Any] = {
        "split": parts.mode,
        "purge_bars": parts.purge_bars,
        "purged_rows": parts.purged_rows,
        "train_rows": len(x_train),
        "test_rows": len(x_test),
        **_span("train", times, parts.train),
        **test_spans,
    }
    if len(parts.validation):
        split_info["validation_rows"] = len(parts.validation)
        split_info.update(_span("validation", times, parts.validation))
    context.logger.info_with(
        "training", model_class=model_class, features=len(plan.features), **split_info
    )
    fit(model, x_train, y_train, fit_kwargs)
    metrics = compute_metrics(model, x_test, y_test, predict_kwargs, y_train=y_train)
    if len(parts.validation):
        x_val, y_val = x.iloc[parts.validation], y.iloc[parts.validation]
        val = compute_metrics(model, x_val, y_val, predict_kwargs, y_train=y_train)
        metrics.update({VALIDATION_PREFIX + k: v for k, v in val.items()})
    context.log_results(
        {**metrics, **split_info, "dropped_target_columns": sorted(plan.dropped_targets)}
    )
    if _flag(plots):
        _log_figures(context, make_plots(model, x_test, y_test))
    # The whole rows (timestamps, targets), so a backtest can line the test set up with prices.
    context.log_dataset(
        test_set_key,
        test_rows,
        format="parquet",
        meta={
            "targets": sorted({*plan.labels, *plan.dropped_targets}),
            **({"time_column": time_name} if time_name else {}),
            **({"label_horizon_bars": horizon} if horizon else {}),
        },
    )
    context.log_model(
        model_name,
        model,
        framework=framework_of(model),
        metrics=metrics,
        labels={
            "model_class": model_class,
            "scaled": str(_flag(scale)).lower(),
            "task": "classification" if classifier else "regression",
            "split": parts.mode,
        },
        feature_names=plan.features,
    )


def _features_for(
    dataset: Any, label_columns: Any, drop_columns: Any, keep_columns: Any
) -> tuple[pd.DataFrame, pd.DataFrame, FeaturePlan]:
    meta = dataset_meta(dataset)
    df = _frame(dataset)
    try:
        time_name, _times = time_index(df, meta)
    except ValueError:  # an unparseable time-like column: not a feature anyway (non-numeric)
        time_name = None
    plan = feature_plan(
        df,
        label_columns,
        drop_columns,
        meta_targets=meta.get("targets"),
        keep_columns=keep_columns,
        time_column=time_name,
    )
    return df, df[plan.features], plan


def evaluate(
    context: Any,
    model: Any = None,
    dataset: Any = None,
    label_columns: Any = "label",
    drop_columns: Any = None,
    keep_columns: Any = None,
    plots: Any = True,
    **kwargs: Any,
) -> None:
    """Metrics and plots of a logged model on a labelled dataset; the baselines come from the
    dataset itself (there is no training set at hand)."""
    if model is None or dataset is None:
        raise ValueError("evaluate needs a model (URI) and a dataset")
    _cls, _fit, predict_kwargs = split_kwargs(kwargs)
    estimator = _load_model(model)
    df, x, plan = _features_for(dataset, label_columns, drop_columns, keep_columns)
    if not plan.labels:
        raise ValueError(f"label column(s) {as_list(label_columns)} not in the dataset")
    x = _align(estimator, df, x)
    y = df[plan.labels]
    context.log_results(compute_metrics(estimator, x, y, predict_kwargs))
    if _flag(plots):
        _log_figures(context, make_plots(estimator, x, y))


def predict(
    context: Any,
    model: Any = None,
    dataset: Any = None,
    label_columns: Any = "label",
    drop_columns: Any = None,
    keep_columns: Any = None,
    result_set: str = "prediction",
    proba: Any = False,
    **kwargs: Any,
) -> None:
    """Predictions of a logged model over a dataset, logged as the ``prediction`` dataset."""
    if model is None or dataset is None:
        raise ValueError("predict needs a model (URI) and a dataset")
    _cls, _fit, predict_kwargs = split_kwargs(kwargs)
    estimator = _load_model(model)
    df, x, _plan = _features_for(dataset, label_columns, drop_columns, keep_columns)
    x = _align(estimator, df, x)
    preds = predictions_frame(
        estimator, x, proba=_flag(proba), label_columns=label_columns, predict_kwargs=predict_kwargs
    )
    out = pd.concat([df, preds], axis=1)
    context.log_dataset(result_set, out, format="parquet")
    context.log_result("rows", len(out))


def _align(model: Any, df: pd.DataFrame, x: pd.DataFrame) -> pd.DataFrame:
    """Columns in the order the model was trained with (extra columns dropped). A column the
    model names is taken from the dataset as it is: the model was trained on it."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        booster = getattr(model, "get_booster", None)
        names = booster().feature_names if booster is not None else None
    if names is None:
        return x
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ValueError(f"the dataset lacks feature(s) the model needs: {missing[:10]}")
    return df[list(names)]


__all__ = [n for n, v in dict(globals()).items() if inspect.isfunction(v) and not n.startswith("_")]
