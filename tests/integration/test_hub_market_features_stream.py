"""hub://market_features' streaming handler deployed as a real replica: klines in over HTTP,
the same features out as the batch computation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import tickrun
from tickrun.hub.sampledata import market_data

pytestmark = pytest.mark.slow


def test_streamed_klines_give_the_batch_features(tmp_path: Path) -> None:
    bars = pd.read_csv(market_data()).iloc[-120:].reset_index(drop=True)
    fn = tickrun.import_function("hub://market_features:1.1")
    batch = fn.module().compute_features(bars, windows="6,24", label=None, dropna=False)
    with fn.deploy(env={"FEATURE_WINDOWS": "6,24"}, directory=tmp_path / "fn") as server:
        replies = []
        for row in bars.itertuples():
            kline = [
                row.timestamp,
                row.open,
                row.high,
                row.low,
                row.close,
                row.volume,
                0,
                0,
                row.trades,
            ]
            replies.append(server.invoke(kline))
    assert replies[0] == {"ready": False, "bars": 1, "needed": 25}
    ready = [r for r in replies if r["ready"]]
    assert len(ready) == len(bars) - 24
    last = ready[-1]["features"]
    assert last["timestamp"] == bars["timestamp"].iloc[-1]
    for col in ("rsi_14", "mfi_14", "sma_ratio_24", "volatility_6", "trades_ratio_24"):
        assert last[col] == pytest.approx(batch[col].iloc[-1], rel=1e-9), col
