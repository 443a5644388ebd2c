"""backtest 1.2.0's walk-forward: models refit on an expanding window, purged of the label's
look-ahead (as in 1.1), their out-of-sample P(up), and how good those are as forecasts (AUC,
log loss) beside the base rate; plus 1.1's checks that bars are consecutive."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def model_scores(model: Any, x: pd.DataFrame) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x))
        return proba[:, -1] if proba.ndim == 2 else proba
    return np.asarray(model.predict(x), dtype=float)


def feature_matrix(df: pd.DataFrame, model: Any = None, exclude: Any = ()) -> pd.DataFrame:
    names = getattr(model, "feature_names_in_", None) if model is not None else None
    if names is None and model is not None and hasattr(model, "get_booster"):
        names = model.get_booster().feature_names
    if names is not None:
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise ValueError(f"the dataset lacks feature(s) the model needs: {missing[:10]}")
        return df[list(names)]
    drop = [c for c in exclude if c in df.columns]
    return df.drop(columns=drop).select_dtypes(include=["number", "bool"])


MAX_INFERRED_HORIZON = 500


def infer_horizon(
    df: pd.DataFrame,
    *,
    price_column: str = "close",
    target_columns: Any = ("future_return",),
    max_horizon: int = MAX_INFERRED_HORIZON,
) -> int | None:
    """The look-ahead ``h`` of a forward-return target (``target_t = P_{t+h} / P_t - 1``),
    found by matching it against the prices; None when no column matches (as in 1.1)."""
    if price_column not in df.columns:
        return None
    prices = pd.to_numeric(df[price_column], errors="coerce").to_numpy(dtype=float)
    for column in target_columns:
        if column not in df.columns:
            continue
        target = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        for h in range(1, min(max_horizon, len(df) - 3) + 1):
            with np.errstate(divide="ignore", invalid="ignore"):
                implied = prices[h:] / prices[:-h] - 1.0
            actual = target[:-h]
            ok = np.isfinite(implied) & np.isfinite(actual)
            if ok.sum() < 3:
                continue
            close = np.isclose(actual[ok], implied[ok], rtol=1e-6, atol=1e-10)
            if close.mean() >= 0.95:  # a few missing bars shift a few targets
                return h
    return None


def purged_splits(n_rows: int, n_splits: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window (train, test) row positions with ``gap`` rows purged between the end of
    each training window and its test fold (the test folds are those of an unpurged split)."""
    from sklearn.model_selection import TimeSeriesSplit

    if gap < 0:
        raise ValueError(f"the purge gap must be >= 0 bars, not {gap}")
    fold = n_rows // (n_splits + 1)
    if fold < 1 or n_rows - n_splits * fold - gap < 1:
        raise ValueError(
            f"{n_rows} rows are too few for {n_splits} walk-forward folds with a purge gap of "
            f"{gap} bars: the first training window would be empty"
        )
    splits = TimeSeriesSplit(n_splits=n_splits, gap=gap).split(np.zeros((n_rows, 1)))
    return [(train, test) for train, test in splits]


@dataclass
class WalkForward:
    scores: pd.Series  # out-of-sample P(up) per row (NaN in the first, training-only chunk)
    folds: pd.Series  # fold number per row (0: never scored)
    train_rates: pd.Series  # per row: the positive rate of the labels its model was fit on


def walk_forward_scores(
    df: pd.DataFrame,
    *,
    model_class: str,
    label_column: str = "label",
    n_splits: int = 5,
    exclude: Any = (),
    class_kwargs: Mapping[str, Any] | None = None,
    scale: bool = False,
    purge: int = 1,
    labels: Any = None,
) -> WalkForward:
    """Fold k is predicted by a model fit on the rows before it (expanding window) minus the
    last ``purge`` rows, whose labels look into fold k. ``labels`` replaces the label column
    (the shuffled-label control refits the same pipeline on permuted labels)."""
    module_name, _, attr = model_class.rpartition(".")
    cls = getattr(importlib.import_module(module_name), attr)
    x = feature_matrix(df, None, exclude=[label_column, *exclude])
    y = np.asarray(df[label_column] if labels is None else labels)
    scores = pd.Series(np.nan, index=df.index)
    folds = pd.Series(0, index=df.index)
    rates = pd.Series(np.nan, index=df.index)
    for fold, (train_idx, test_idx) in enumerate(purged_splits(len(x), n_splits, purge), 1):
        model = cls(**dict(class_kwargs or {}))
        if scale:
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            model = make_pipeline(StandardScaler(), model)
        model.fit(x.iloc[train_idx], y[train_idx])
        scores.iloc[test_idx] = model_scores(model, x.iloc[test_idx])
        folds.iloc[test_idx] = fold
        rates.iloc[test_idx] = float(np.mean(binary_labels(y[train_idx])))
    return WalkForward(scores, folds, rates)


def binary_labels(labels: Any) -> np.ndarray:
    """Up (1) / not up (0): a 0/1 label as is, a return label by its sign."""
    y = pd.to_numeric(pd.Series(np.asarray(labels)), errors="coerce").to_numpy(dtype=float)
    return (y > 0).astype(float) if len(np.unique(y[~np.isnan(y)])) > 2 else (y > 0.5) * 1.0


def classification_metrics(labels: Any, scores: Any, train_rates: Any) -> dict[str, float]:
    """AUC and log loss of out-of-sample P(up) beside the base rate (the share of ups) and the
    log loss of a model without features (each fold's training positive rate as the forecast)."""
    from sklearn.metrics import log_loss, roc_auc_score

    y = binary_labels(labels)
    p = np.clip(np.asarray(scores, dtype=float), 1e-15, 1 - 1e-15)
    base = np.clip(np.asarray(train_rates, dtype=float), 1e-15, 1 - 1e-15)
    both = len(np.unique(y)) == 2
    return {
        "auc": float(roc_auc_score(y, p)) if both else math.nan,
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "base_rate": float(y.mean()),
        "baseline_log_loss": float(-(y * np.log(base) + (1 - y) * np.log(1 - base)).mean()),
    }


def bar_gaps(timestamps: pd.Series) -> dict[str, Any]:
    """How far the bars are from consecutive: steps larger than the median bar spacing.

    Raises ValueError when the timestamps do not parse or do not strictly increase (out of
    time order or repeated bars)."""
    stamps = pd.to_datetime(timestamps, utc=True, errors="coerce")
    if stamps.isna().any():
        bad = timestamps[stamps.isna()].iloc[0]
        raise ValueError(f"timestamp {bad!r} is not a date/time; cannot check the bars")
    steps = stamps.diff().iloc[1:]
    if len(steps) == 0:
        return {"bar_gaps": 0, "largest_gap_bars": 0.0, "bar_spacing": ""}
    if (steps <= pd.Timedelta(0)).any():
        where = int(np.argmax((steps <= pd.Timedelta(0)).to_numpy())) + 1
        raise ValueError(
            f"timestamps must strictly increase; bar {where} ({stamps.iloc[where]}) repeats or "
            f"precedes the one before it ({stamps.iloc[where - 1]}): a model's rows must be in "
            "time order (a random split's test set is not a backtest)"
        )
    spacing = steps.median()
    big = steps > spacing
    first = int(np.argmax(big.to_numpy())) + 1 if big.any() else None
    return {
        "bar_gaps": int(big.sum()),
        "largest_gap_bars": float(steps.max() / spacing),
        "bar_spacing": str(spacing),
        "first_gap": "" if first is None else f"{stamps.iloc[first - 1]} → {stamps.iloc[first]}",
    }
