"""market_features 1.0.0 — OHLCV bars → returns, moving-average ratios, volatility, RSI, volume
ratios and a next-bar up/down label. Superseded by 1.1.0 (MFI, trades, return labels, streaming);
kept so runs pinned to ``hub://market_features:1.0`` reproduce exactly.

Features at bar t use bars ≤ t only; ``label`` is the only column that looks forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DEFAULT_WINDOWS = (6, 24, 72)


def compute_features(
    bars: pd.DataFrame, *, windows: Any = None, rsi_window: int = 14, dropna: bool = True
) -> pd.DataFrame:
    for col in ("open", "high", "low", "close", "volume"):
        if col not in bars.columns:
            raise ValueError(f"bars lack column {col!r}")
    if isinstance(windows, str):
        windows = [int(w) for w in windows.split(",") if w.strip()]
    wins = tuple(sorted({int(w) for w in (windows or DEFAULT_WINDOWS)}))
    df = bars.reset_index(drop=True)
    close = df["close"].astype(float)
    log_ret = np.log(close).diff()
    out: dict[str, pd.Series] = {}
    if "timestamp" in df.columns:
        out["timestamp"] = df["timestamp"]
    out["ret_1"] = close.pct_change()
    for w in wins:
        out[f"ret_{w}"] = close / close.shift(w) - 1.0
        out[f"sma_ratio_{w}"] = close / close.rolling(w).mean() - 1.0
        out[f"volatility_{w}"] = log_ret.rolling(w).std()
        out[f"volume_ratio_{w}"] = df["volume"] / df["volume"].rolling(w).mean()
    delta = close.diff()
    gain = delta.clip(lower=0).rolling(rsi_window).mean()
    loss = (-delta.clip(upper=0)).rolling(rsi_window).mean()
    out[f"rsi_{rsi_window}"] = 100.0 * gain / (gain + loss)
    frame = pd.DataFrame(out).replace([np.inf, -np.inf], np.nan)
    future = close.shift(-1) / close - 1.0
    frame["label"] = (future > 0).astype("int64").where(future.notna())
    if dropna:
        frame = frame.dropna().reset_index(drop=True)
        frame["label"] = frame["label"].astype("int64")
    return frame


def featurize(
    context: Any,
    dataset: Any = None,
    windows: Any = "6,24,72",
    rsi_window: int = 14,
    features_key: str = "features",
) -> None:
    """Job: OHLCV dataset → features dataset (``features``)."""
    if dataset is None:
        raise ValueError("featurize needs an OHLCV dataset input")
    frame = compute_features(dataset.as_df(), windows=windows, rsi_window=int(rsi_window))
    context.log_dataset(features_key, frame, format="parquet")
    context.log_results({"rows": len(frame), "label_up_fraction": float(frame["label"].mean())})
