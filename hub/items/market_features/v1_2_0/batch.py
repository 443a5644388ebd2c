"""market_features 1.2.0, batch: OHLCV bars → causal features and a forward label (1.1's numbers,
1.1's code path), the gap rule's batch side (``interval``), and Binance kline CSV rows → bars.

Also the shared vocabulary of the item's files: the window spec (:func:`parse_windows`,
:func:`lookback`), bar intervals (:func:`interval_ms`) and feature names in batch order
(:func:`feature_names`), which the streaming window must match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

OHLCV = ("open", "high", "low", "close", "volume")
DEFAULT_WINDOWS = (6, 24, 72)
TARGET_COLUMNS = ("label", "future_return")
NAN = float("nan")
_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


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
    """Bars a streaming caller must keep so the newest bar's features are complete."""
    return max(*parse_windows(windows), rsi_window, mfi_window) + 1


def interval_ms(value: Any) -> int:
    """A bar interval in ms: ``"1m"``, ``"4h"``, ``"1d"``, ``"30s"`` (Binance's names) or ms."""
    if isinstance(value, str):
        text = value.strip()
        match = re.fullmatch(r"(\d+)([smhdw])", text)
        if match:
            ms = int(match[1]) * _UNITS[match[2]]
        elif text.isdigit():
            ms = int(text)
        else:
            raise ValueError(f"bar interval {value!r}: e.g. 1m, 15m, 1h, 1d or milliseconds")
    elif isinstance(value, int | float) and not isinstance(value, bool) and value == int(value):
        ms = int(value)
    else:
        raise ValueError(f"bar interval {value!r}: e.g. 1m, 15m, 1h, 1d or milliseconds")
    if ms <= 0:
        raise ValueError(f"bar interval must be positive, got {value!r}")
    return ms


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


def timestamps_ms(ts: pd.Series) -> np.ndarray:
    """A timestamp column as int ms since the epoch: numbers are taken as ms already (Binance
    open times), anything else is parsed as dates (naive ones as UTC)."""
    if pd.api.types.is_numeric_dtype(ts):
        return ts.to_numpy(dtype="int64")
    dates = pd.to_datetime(ts, utc=True)
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy("int64")


def gap_masks(ts_ms: np.ndarray, step_ms: int, steps: int, horizon: int) -> tuple[Any, Any]:
    """(features_broken, label_broken): row t's look-back of ``steps`` bar steps, or its label's
    ``horizon`` steps ahead, contains a step other than exactly ``step_ms``."""
    broken = np.zeros(len(ts_ms), dtype=bool)
    broken[1:] = np.diff(ts_ms) != step_ms  # the step into row t is a gap (or out of order)
    count = np.cumsum(broken)
    before = np.concatenate([np.zeros(min(steps, len(count)), dtype=count.dtype), count])
    features_bad = count - before[: len(count)] > 0
    ahead = np.concatenate([count[horizon:], np.full(min(horizon, len(count)), count[-1:])])
    label_bad = ahead[: len(count)] - count > 0 if len(count) else broken
    return features_bad, label_bad


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
    interval: Any = None,
) -> pd.DataFrame:
    """Feature frame for ``bars`` (columns open, high, low, close, volume; optional timestamp,
    trades). ``label``: ``"updown"`` (1 if the return over the next ``horizon`` bars is above
    ``threshold``), ``"return"`` (that return) or None (no target: the streaming case).

    ``interval`` (e.g. ``"1m"``, ``"1h"``, ms, or ``"auto"``: the commonest step; needs a
    ``timestamp`` column): features whose look-back spans a step other than one interval, and
    labels whose horizon does, become NaN — the streaming handler's gap rule. None (default):
    rows are consecutive bars, as in 1.1."""
    missing = [c for c in OHLCV if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {', '.join(missing)}; have {list(bars.columns)}")
    if label not in ("updown", "return", None):
        raise ValueError(f"label must be 'updown', 'return' or None, not {label!r}")
    if horizon < 1:
        raise ValueError("horizon must be >= 1 bar")
    wins = parse_windows(windows)
    df = bars.reset_index(drop=True)
    features_bad = label_bad = None
    if interval is not None and interval != "":
        if "timestamp" not in df.columns:
            raise ValueError("interval (gap handling) needs a timestamp column")
        ts = timestamps_ms(df["timestamp"])
        if interval == "auto":
            steps = pd.Series(np.diff(ts))
            steps = steps[steps > 0]
            if steps.empty:
                raise ValueError("interval='auto' needs at least two increasing timestamps")
            step = int(steps.mode().iloc[0])
        else:
            step = interval_ms(interval)
        look = lookback(wins, rsi_window, mfi_window) - 1
        features_bad, label_bad = gap_masks(ts, step, look, horizon)
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
        if label_bad is not None:
            future = future.where(~label_bad)
        frame["future_return"] = future
        if label == "updown":
            frame["label"] = (future > threshold).astype("int64").where(future.notna())
        else:
            frame["label"] = future
    features = [c for c in frame.columns if c not in ("timestamp", *TARGET_COLUMNS)]
    frame[features] = frame[features].replace([np.inf, -np.inf], np.nan)
    if features_bad is not None:
        frame.loc[features_bad, features] = np.nan
    if dropna:
        frame = frame.dropna().reset_index(drop=True)
        if label == "updown":
            frame["label"] = frame["label"].astype("int64")
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("timestamp", *TARGET_COLUMNS)]


def feature_names(
    windows: Any = None, rsi_window: int = 14, mfi_window: int = 14, trades: bool = True
) -> list[str]:
    """The feature columns :func:`compute_features` gives, in its order."""
    names = ["ret_1", "log_ret_1", "hl_range", "body"]
    for w in parse_windows(windows):
        names += [f"ret_{w}", f"sma_ratio_{w}", f"volatility_{w}", f"volume_ratio_{w}"]
        names += [f"volume_z_{w}", f"range_mean_{w}"] + ([f"trades_ratio_{w}"] if trades else [])
    return [*names, f"rsi_{rsi_window}", f"mfi_{mfi_window}"]


def bars_from_klines(klines: pd.DataFrame) -> pd.DataFrame:
    """Binance kline CSV rows (open_time, open, high, low, close, volume, …, trades) → the bars
    :func:`compute_features` takes: timestamp (= open_time, ms), OHLCV, trades; sorted by open
    time, one row per open time (the first, as the stream keeps the first closed kline)."""
    need = ["open_time", *OHLCV]
    missing = [c for c in need if c not in klines.columns]
    if missing:
        raise ValueError(f"not Binance klines: no column(s) {', '.join(missing)}")
    cols = need + (["trades"] if "trades" in klines.columns else [])
    bars = klines[cols].rename(columns={"open_time": "timestamp"})
    bars = bars.astype({c: "float64" for c in OHLCV}).astype({"timestamp": "int64"})
    bars = bars.sort_values("timestamp", kind="stable").drop_duplicates("timestamp")
    return bars.reset_index(drop=True)
