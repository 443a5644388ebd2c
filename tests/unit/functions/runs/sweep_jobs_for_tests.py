"""Handlers the sweep-selection and Optuna tests load by file path, also in worker processes."""

from __future__ import annotations

import os
from typing import Any

PATH = os.path.abspath(__file__)


def ref(name: str) -> str:
    return f"{PATH}:{name}"


def trains(context: Any, c: float = 1.0, validation: bool = True) -> dict[str, float]:
    """A model whose validation and test figures disagree: validation_auc peaks at c=2, the
    test auc grows with c. Without ``validation`` only the test auc is reported."""
    out = {"auc": 0.5 + 0.1 * c}
    if validation:
        out["validation_auc"] = 0.8 - 0.1 * abs(c - 2)
    return out


def ma_backtest(context: Any, window: int = 24) -> dict[str, float]:
    """Long when the hourly close is above its ``window``-bar mean, on the shipped BTCUSDT
    hourly bars of 2023: what backtest 1.2.0 reports (contract 3), from real returns."""
    import numpy as np
    import pandas as pd

    from tickrun.hub.sampledata import market_data

    df = pd.read_csv(market_data())
    ts = pd.to_datetime(df["timestamp"], utc=True)
    close = df.loc[(ts >= "2023-01-01") & (ts < "2024-01-01"), "close"].astype(float)
    ret = close.pct_change()
    position = (close > close.rolling(window).mean()).astype(float).shift(1)
    net = (position * ret).dropna().to_numpy()
    sd = float(net.std(ddof=1))
    ppy = 24 * 365
    centred = net - net.mean()
    return {
        "sharpe": float(net.mean() / sd * np.sqrt(ppy)),
        "periods_per_year": float(ppy),
        "n_periods": len(net),
        "returns_skew": float((centred**3).mean() / net.std() ** 3),
        "returns_kurtosis": float((centred**4).mean() / net.std() ** 4),
    }


def climbs(context: Any, x: float = 0.0, shape: str = "flat", steps: int = 6) -> None:
    """A synthetic objective whose bad trials show from the first step: quality -(x-2)^2
    (a ``bump`` shape adds 0.5), improving a little with each step. Stops when pruned."""
    quality = -((x - 2) ** 2) + (0.5 if shape == "bump" else 0.0)
    for step in range(steps):
        context.report_intermediate(step, quality + 0.01 * step)
        if context.should_prune():
            context.log_result("stopped_at", step)
            return
    context.log_result("score", quality + 0.01 * steps)
