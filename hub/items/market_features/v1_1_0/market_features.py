"""market_features 1.1.0 — OHLCV bars → causal features and a next-period label.

Every feature at bar t is a function of bars ≤ t only, and every one has a finite look-back
(rolling windows, RSI on simple averages — no exponential smoothing with unbounded memory), so the
streaming path (:class:`FeatureWindow`, the Nuclio ``handler``) that keeps only the last
:func:`lookback` bars computes exactly what the batch path computes on the full history.

Only ``label`` and ``future_return`` look forward; they are the targets, never inputs.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

OHLCV = ("open", "high", "low", "close", "volume")
DEFAULT_WINDOWS = (6, 24, 72)
TARGET_COLUMNS = ("label", "future_return")


def parse_windows(windows: Any) -> tuple[int, ...]:
    if windows is None:
        return DEFAULT_WINDOWS
    if isinstance(windows, str):
        items: Iterable[Any] = [w for w in windows.replace(";", ",").split(",") if w.strip()]
    elif isinstance(windows, int):
        items = [windows]
    else:
        items = windows
    out = tuple(sorted({int(w) for w in items}))
    if not out or out[0] < 2:
        raise ValueError(f"windows must be integers >= 2, got {windows!r}")
    return out


def lookback(windows: Any = None, rsi_window: int = 14, mfi_window: int = 14) -> int:
    """Bars a streaming caller must keep so the newest bar's features are complete and exact."""
    return max(*parse_windows(windows), rsi_window, mfi_window) + 1


def _rsi(close: pd.Series, window: int) -> pd.Series:
    delta = close.diff()
    gain = delta.clip(lower=0).rolling(window).mean()
    loss = (-delta.clip(upper=0)).rolling(window).mean()
    total = gain + loss
    # A flat window (no moves at all) is neutral, not undefined.
    # Rolling sums carry rounding (a window of only gains can give 100.0000001): clip.
    rsi = (100.0 * gain / total.where(total > 0)).clip(0.0, 100.0)
    return rsi.where(total > 0, 50.0).where(total.notna())


def _mfi(df: pd.DataFrame, window: int) -> pd.Series:
    typical = (df["high"] + df["low"] + df["close"]) / 3.0
    flow = typical * df["volume"]
    move = typical.diff()
    positive = flow.where(move > 0, 0.0).rolling(window).sum()
    negative = flow.where(move < 0, 0.0).rolling(window).sum()
    total = positive + negative
    mfi = (100.0 * positive / total.where(total > 0)).clip(0.0, 100.0)
    return mfi.where(total > 0, 50.0).where(total.notna() & move.rolling(window).count().eq(window))


def compute_features(
    bars: pd.DataFrame,
    *,
    windows: Any = None,
    rsi_window: int = 14,
    mfi_window: int = 14,
    label: str | None = "updown",
    horizon: int = 1,
    threshold: float = 0.0,
    dropna: bool = True,
) -> pd.DataFrame:
    """Feature frame for ``bars`` (columns open, high, low, close, volume; optional timestamp,
    trades). ``label``: ``"updown"`` (1 if the return over the next ``horizon`` bars is above
    ``threshold``), ``"return"`` (that return) or None (no target: the streaming case)."""
    missing = [c for c in OHLCV if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {', '.join(missing)}; have {list(bars.columns)}")
    if label not in ("updown", "return", None):
        raise ValueError(f"label must be 'updown', 'return' or None, not {label!r}")
    if horizon < 1:
        raise ValueError("horizon must be >= 1 bar")
    wins = parse_windows(windows)
    df = bars.reset_index(drop=True)
    close = df["close"].astype(float)
    volume = df["volume"].astype(float)
    log_ret = np.log(close).diff()
    out: dict[str, pd.Series] = {}
    if "timestamp" in df.columns:
        out["timestamp"] = df["timestamp"]
    out["ret_1"] = close.pct_change()
    out["log_ret_1"] = log_ret
    out["hl_range"] = (df["high"] - df["low"]) / close
    out["body"] = (close - df["open"]) / df["open"]
    for w in wins:
        out[f"ret_{w}"] = close / close.shift(w) - 1.0
        sma = close.rolling(w).mean()
        out[f"sma_ratio_{w}"] = close / sma - 1.0
        out[f"volatility_{w}"] = log_ret.rolling(w).std()
        vmean = volume.rolling(w).mean()
        vstd = volume.rolling(w).std()
        out[f"volume_ratio_{w}"] = volume / vmean.where(vmean > 0)
        out[f"volume_z_{w}"] = (volume - vmean) / vstd.where(vstd > 0)
        out[f"range_mean_{w}"] = out["hl_range"].rolling(w).mean()
        if "trades" in df.columns:
            trades = df["trades"].astype(float)
            tmean = trades.rolling(w).mean()
            out[f"trades_ratio_{w}"] = trades / tmean.where(tmean > 0)
    out[f"rsi_{rsi_window}"] = _rsi(close, rsi_window)
    out[f"mfi_{mfi_window}"] = _mfi(df, mfi_window)
    frame = pd.DataFrame(out)
    if label is not None:
        future = close.shift(-horizon) / close - 1.0
        frame["future_return"] = future
        if label == "updown":
            frame["label"] = (future > threshold).astype("int64").where(future.notna())
        else:
            frame["label"] = future
    features = [c for c in frame.columns if c not in ("timestamp", *TARGET_COLUMNS)]
    frame[features] = frame[features].replace([np.inf, -np.inf], np.nan)
    if dropna:
        frame = frame.dropna().reset_index(drop=True)
        if label == "updown":
            frame["label"] = frame["label"].astype("int64")
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("timestamp", *TARGET_COLUMNS)]


class FeatureWindow:
    """Rolling state for a stream of bars; :meth:`update` returns the newest bar's features.

    Keeps only :func:`lookback` bars, so memory and time per bar stay constant however long
    the stream runs."""

    def __init__(self, windows: Any = None, rsi_window: int = 14, mfi_window: int = 14) -> None:
        self.windows = parse_windows(windows)
        self.rsi_window = rsi_window
        self.mfi_window = mfi_window
        self.size = lookback(self.windows, rsi_window, mfi_window)
        self._bars: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.size)

    @property
    def ready(self) -> bool:
        return len(self._bars) == self.size

    def update(self, bar: Mapping[str, Any]) -> dict[str, Any] | None:
        """Add a closed bar; None until the window is full."""
        row = {k: bar[k] for k in (*OHLCV, "timestamp", "trades") if k in bar}
        for k in OHLCV:
            row[k] = float(row[k])
        self._bars.append(row)
        if not self.ready:
            return None
        frame = compute_features(
            pd.DataFrame(list(self._bars)),
            windows=self.windows,
            rsi_window=self.rsi_window,
            mfi_window=self.mfi_window,
            label=None,
            dropna=False,
        )
        last = frame.iloc[-1]
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in last.items()}


def bar_from_event(body: Any) -> dict[str, Any]:
    """A bar from a kline event: Binance's websocket ``{"k": {...}}``, its REST array, or a dict
    with open/high/low/close/volume."""
    if isinstance(body, Mapping) and isinstance(body.get("k"), Mapping):
        k = body["k"]
        return {
            "timestamp": k.get("t"),
            "open": k["o"],
            "high": k["h"],
            "low": k["l"],
            "close": k["c"],
            "volume": k["v"],
            "trades": k.get("n", 0),
        }
    if isinstance(body, Sequence) and not isinstance(body, str | bytes) and len(body) >= 6:
        bar = {
            "timestamp": body[0],
            "open": body[1],
            "high": body[2],
            "low": body[3],
            "close": body[4],
            "volume": body[5],
        }
        if len(body) > 8:
            bar["trades"] = body[8]
        return bar
    if isinstance(body, Mapping):
        return dict(body)
    raise ValueError("a bar is a kline dict/array with open, high, low, close, volume")


# --- Nuclio streaming handler (Kafka klines → features) --------------------------------------


def init_context(context: Any) -> None:
    context.user_data.features = FeatureWindow(
        os.environ.get("FEATURE_WINDOWS"),
        int(os.environ.get("RSI_WINDOW", "14")),
        int(os.environ.get("MFI_WINDOW", "14")),
    )


def handler(context: Any, event: Any) -> Any:
    body = event.body
    if isinstance(body, bytes | str):
        import json

        body = json.loads(body)
    try:
        bar = bar_from_event(body)
        features = context.user_data.features.update(bar)
    except (KeyError, TypeError, ValueError) as exc:
        return 400, {"error": f"not a kline: {exc}"}
    if features is None:
        window = context.user_data.features
        return {"ready": False, "bars": len(window._bars), "needed": window.size}
    return {"ready": True, "features": features}


# --- job handler -----------------------------------------------------------------------------


def featurize(
    context: Any,
    dataset: Any = None,
    windows: Any = "6,24,72",
    rsi_window: int = 14,
    mfi_window: int = 14,
    label: str = "updown",
    horizon: int = 1,
    threshold: float = 0.0,
    features_key: str = "features",
    format: str = "parquet",
) -> None:
    """Job: OHLCV dataset → features dataset (logged as ``features``) + summary results."""
    if dataset is None:
        raise ValueError("featurize needs an OHLCV dataset input")
    bars = dataset.as_df()
    frame = compute_features(
        bars,
        windows=windows,
        rsi_window=int(rsi_window),
        mfi_window=int(mfi_window),
        label=label,
        horizon=int(horizon),
        threshold=float(threshold),
    )
    context.logger.info_with(
        "features computed", rows=len(frame), features=len(feature_columns(frame))
    )
    context.log_dataset(features_key, frame, format=format)
    results: dict[str, Any] = {
        "rows": len(frame),
        "dropped_rows": len(bars) - len(frame),
        "feature_count": len(feature_columns(frame)),
    }
    if label == "updown":
        results["label_up_fraction"] = float(frame["label"].mean())
    context.log_results(results)
