"""Step handlers for the pipeline tests (loaded by path, as users' step files are)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd


def bars(context: Any, market: Any = None, rows: int = 500) -> None:
    """The last ``rows`` hourly bars of the shipped BTCUSDT data, as a dataset."""
    df = pd.read_csv(market.local())
    context.log_dataset("bars", df.tail(int(rows)).reset_index(drop=True))
    context.log_result("rows", len(df.tail(int(rows))))


def returns(context: Any, bars: Any = None, horizon: int = 1) -> None:
    df = bars.as_df()
    ret = df["close"].pct_change(int(horizon)).dropna()
    context.log_dataset("returns", ret.to_frame("ret"))
    context.log_result("mean_return", float(ret.mean()))
    context.log_result("bars_rows", len(df))


def summary(context: Any, returns: Any = None, source_run: str = "", mean: float = 0.0) -> None:
    context.log_result("n", len(returns.as_df()) if returns is not None else 0)
    context.log_result("source_run", source_run)
    context.log_result("mean_seen", mean)


def sleep_step(context: Any, seconds: float = 1.0) -> None:
    context.log_result("t0", time.time())
    time.sleep(float(seconds))
    context.log_result("t1", time.time())


def fail(context: Any, why: str = "boom") -> None:
    raise ValueError(why)


def flaky(context: Any, counter: str = "", fail_times: int = 1) -> None:
    """Fails the first ``fail_times`` calls (counted in the file ``counter``), then works."""
    path = Path(counter)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < int(fail_times):
        raise RuntimeError(f"flaky: attempt {n + 1} fails")
    context.log_result("calls", n + 1)


def fit_window(context: Any, bars: Any = None, window: int = 3) -> None:
    """Scores a moving-average window: minus the mean absolute error of predicting close."""
    df = bars.as_df()
    pred = df["close"].rolling(int(window)).mean().shift(1)
    err = float((df["close"] - pred).abs().mean())
    context.log_result("score", -err)
    context.log_artifact("model", body=f"window={int(window)}")
