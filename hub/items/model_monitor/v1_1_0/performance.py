"""model_monitor 1.1.0: prediction drift and live performance, pure functions.

Outcomes of a market model come from the market data itself: the next bar's return
``close[t+1] / close[t] - 1`` of each row of the window (rows in time order). With a time
column, a row whose next row is not exactly one bar later (the window's median step) has no
known outcome; the last row never has one.

The position at row t is the ``signal`` column when present (model_server 1.1's: 1 long,
-1 short, 0 flat), else from ``prediction`` (1 → long, 0 → flat, or short with
``short=True``), else from ``probability`` (> threshold → long; < 1 - threshold → short with
``short=True``; else flat). Over the rows with a known outcome, in order:

- ``hit_rate``: the share of rows in a position whose sign equals the sign of the next return
  (a zero return is a miss); ``active_bars`` counts them;
- ``pnl_gross`` = Σ position_t · r_{t+1} (simple returns on a notional of 1, not compounded);
  ``fees`` = fee_bp / 10⁴ · Σ |position_t - position_{t-1}| (the first from flat: every change
  of position trades); ``pnl_net`` = gross - fees; ``trades`` = number of position changes.

Labels: a label column (e.g. market_features' ``label``) when it has values, else the market
outcome ``r_{t+1} > 0``; with both classes present, ``auc`` and ``log_loss`` of ``probability``
and ``accuracy`` of ``prediction``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def next_returns(close: Any, times: Any = None) -> np.ndarray:
    """r[t] = close[t+1] / close[t] - 1, NaN where the next row is not the next bar."""
    c = np.asarray(close, dtype=np.float64)
    r = np.full(c.shape, np.nan)
    if c.size < 2:
        return r
    r[:-1] = c[1:] / c[:-1] - 1.0
    if times is not None:
        ticks = _ticks(times)
        if ticks is not None:
            steps = np.diff(ticks)
            if steps.size:
                step = np.median(steps)
                r[:-1][steps != step] = np.nan
    return r


def _ticks(times: Any) -> np.ndarray | None:
    """Times as int64 ticks (only equal steps matter): epoch numbers (model_server's
    ``open_time`` in ms) as they are, datetimes or strings as ns; None if any is missing."""
    series = pd.Series(times)
    if pd.api.types.is_numeric_dtype(series):
        return None if series.isna().any() else series.to_numpy(dtype=np.int64)
    parsed = pd.to_datetime(series, utc=True, errors="coerce")
    return None if parsed.isna().any() else parsed.astype("int64").to_numpy()


def positions(
    frame: pd.DataFrame, *, short: bool = False, threshold: float = 0.5
) -> np.ndarray | None:
    """Each row's position (1, 0, -1), or None when the window has no model output."""
    if "signal" in frame.columns:
        return np.sign(frame["signal"].to_numpy(dtype=np.float64))
    if "prediction" in frame.columns:
        pred = frame["prediction"].to_numpy(dtype=np.float64)
        return np.where(pred > 0.5, 1.0, -1.0 if short else 0.0)
    if "probability" in frame.columns:
        p = frame["probability"].to_numpy(dtype=np.float64)
        low = np.where(p < 1.0 - threshold, -1.0, 0.0) if short else np.zeros_like(p)
        return np.where(p > threshold, 1.0, low)
    return None


def trading(position: np.ndarray, returns: np.ndarray, fee_bp: float = 10.0) -> dict[str, Any]:
    """hit_rate, active_bars, bars, pnl_gross, fees, pnl_net, trades over the known outcomes."""
    known = np.isfinite(returns) & np.isfinite(position)
    pos, ret = position[known], returns[known]
    active = pos != 0
    hits = np.sign(pos[active]) == np.sign(ret[active])
    changes = np.abs(np.diff(np.concatenate([[0.0], pos])))
    gross = float(np.sum(pos * ret))
    fees = float(fee_bp) / 1e4 * float(np.sum(changes))
    return {
        "bars": int(known.sum()),
        "active_bars": int(active.sum()),
        "hit_rate": float(hits.mean()) if hits.size else math.nan,
        "pnl_gross": gross,
        "fees": fees,
        "pnl_net": gross - fees,
        "trades": int(np.count_nonzero(changes)),
    }


def classification(
    frame: pd.DataFrame, labels: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """auc / log_loss of ``probability`` and accuracy of ``prediction`` against ``labels``
    (NaN labels skipped); {} with one class or nothing to score."""
    from sklearn import metrics

    out: dict[str, Any] = {}
    known = np.isfinite(labels)
    y = labels[known].astype(int)
    out["labelled_rows"] = int(y.size)
    if y.size == 0:
        return out
    out["outcome_rate"] = float(y.mean())
    if "probability" in frame.columns:
        p = frame["probability"].to_numpy(dtype=np.float64)[known]
        ok = np.isfinite(p)
        if len(np.unique(y[ok])) == 2:
            out["auc"] = float(metrics.roc_auc_score(y[ok], p[ok]))
            out["log_loss"] = float(metrics.log_loss(y[ok], np.clip(p[ok], 1e-15, 1 - 1e-15)))
            rate = float(y[ok].mean())
            out["baseline_log_loss"] = float(metrics.log_loss(y[ok], np.full(ok.sum(), rate)))
    if "prediction" in frame.columns:
        pred = frame["prediction"].to_numpy(dtype=np.float64)[known]
        out["accuracy"] = float(np.mean((pred > 0.5).astype(int) == y))
    elif "probability" in frame.columns:
        p = frame["probability"].to_numpy(dtype=np.float64)[known]
        out["accuracy"] = float(np.mean((p > threshold).astype(int) == y))
    return out


def output_column(frame: pd.DataFrame) -> str | None:
    """The model output compared for prediction drift: probability, else prediction."""
    for name in ("probability", "prediction"):
        if name in frame.columns and frame[name].notna().any():
            return name
    return None
