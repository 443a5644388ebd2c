from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tickrun.hub import import_function

bt = import_function("hub://backtest:1.1").module()  # 1.1's conventions

PRICES = [100.0, 110.0, 99.0, 99.0, 108.9]
SIGNALS = [1, 1, 0, 1, 1]
FEE = 0.01


def test_small_case_by_hand() -> None:
    result = bt.run_backtest(
        pd.Series(PRICES), pd.Series(SIGNALS, dtype=float), fee_rate=FEE, periods_per_year=1
    )
    # bar returns +10%, -10%, 0, +10%; held over bars 1, 2 (long), 3 (flat→ bought at 3's close), 4
    net = [-0.01, 0.10, -0.10 - 0.01, 0.0 - 0.01, 0.10]  # fees: buy@0, sell@2, buy@3
    equity = np.cumprod([1 + n for n in net])
    np.testing.assert_allclose(result.frame["net_return"], net)
    np.testing.assert_allclose(result.frame["equity"], equity)
    s = result.stats
    assert s["cumulative_return"] == pytest.approx(0.99 * 1.1 * 0.89 * 0.99 * 1.1 - 1)
    assert s["trades"] == 3
    assert s["hit_rate"] == pytest.approx(2 / 3)  # held over bars 1, 2, 4; bar 2 lost
    assert s["exposure"] == pytest.approx(4 / 5)
    assert s["fees_paid"] == pytest.approx(
        0.01 * 1.0 + 0.01 * (0.99 * 1.1) + 0.01 * (0.99 * 1.1 * 0.89)
    )
    peak = 0.99 * 1.1
    assert s["max_drawdown"] == pytest.approx(1 - 0.99 * 1.1 * 0.89 * 0.99 / peak)
    rest = net[1:]
    mean = sum(rest) / 4
    std = math.sqrt(sum((r - mean) ** 2 for r in rest) / 3)
    assert s["sharpe"] == pytest.approx(mean / std)
    # buy and hold: one entry fee, then the price path
    assert s["bh_cumulative_return"] == pytest.approx(0.99 * 108.9 / 100 - 1)
    assert s["excess_return"] == pytest.approx(s["cumulative_return"] - s["bh_cumulative_return"])


def test_short_positions_and_probability_signals() -> None:
    pos = bt.positions_from_signals(
        pd.Series([0.9, 0.2, 0.5, 0.61]), allow_short=True, threshold=0.6
    )
    assert pos.tolist() == [1.0, -1.0, 0.0, 1.0]
    long_only = bt.positions_from_signals(pd.Series([0.9, 0.2]), threshold=0.6)
    assert long_only.tolist() == [1.0, 0.0]
    # a short through a 10% drop earns 10% (no fees)
    res = bt.run_backtest(pd.Series([100.0, 90.0]), pd.Series([-1.0, -1.0]), fee_rate=0.0)
    assert res.stats["cumulative_return"] == pytest.approx(0.10)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="positive"):
        bt.run_backtest(pd.Series([1.0, -1.0]), pd.Series([1.0, 1.0]))
    with pytest.raises(ValueError, match="prices but"):
        bt.run_backtest(pd.Series([1.0, 2.0]), pd.Series([1.0]))


def test_handler_on_real_signals(hourly_bars, fake_context, frame_item) -> None:
    bars = hourly_bars.iloc[-2000:].reset_index(drop=True)
    # a 24-bar momentum rule: long while the close is above its 24-bar mean
    signal = (bars["close"] > bars["close"].rolling(24).mean()).astype(float)
    data = bars.assign(signal=signal)
    bt.backtest(fake_context, dataset=frame_item(data), fee_rate=0.0005)
    r = fake_context.results
    assert r["bars"] == 2000
    for key in (
        "cumulative_return",
        "sharpe",
        "max_drawdown",
        "hit_rate",
        "fees_paid",
        "bh_cumulative_return",
        "bh_sharpe",
        "bh_max_drawdown",
    ):
        assert np.isfinite(r[key]), key
    assert r["bh_cumulative_return"] == pytest.approx(
        (1 - 0.0005) * bars["close"].iloc[-1] / bars["close"].iloc[0] - 1
    )
    assert 0 <= r["max_drawdown"] < 1 and 0 <= r["hit_rate"] <= 1
    assert fake_context.artifacts["equity-curve"]["body"][:4] == b"\x89PNG"
    curve = fake_context.datasets["equity_curve"]
    assert curve["equity"].iloc[-1] == pytest.approx(1 + r["cumulative_return"])


def test_walk_forward_on_features(hourly_bars, fake_context, frame_item) -> None:
    mf = import_function("hub://market_features").module()
    feats = mf.compute_features(hourly_bars.iloc[-3000:], windows="6,24")
    bt.backtest(
        fake_context,
        dataset=frame_item(feats),
        prices=frame_item(hourly_bars),
        walk_forward_splits=4,
    )
    assert fake_context.labels["backtest.mode"] == "walk_forward"
    # the first of 5 folds has no out-of-sample score and is left out
    assert fake_context.results["bars"] == len(feats) - len(feats) // 5
    assert np.isfinite(fake_context.results["sharpe"])
    folds = fake_context.datasets["walk_forward_folds"]
    assert folds["fold"].tolist() == [1, 2, 3, 4]
    assert folds["bars"].sum() == fake_context.results["bars"]
    # the folds chain into the whole out-of-sample run
    assert (1 + folds["cumulative_return"]).prod() - 1 == pytest.approx(
        fake_context.results["cumulative_return"]
    )
    assert (1 + folds["bh_cumulative_return"]).prod() - 1 == pytest.approx(
        fake_context.results["bh_cumulative_return"]
    )
    assert 0 <= fake_context.results["wf_positive_folds"] <= 4
