"""backtest 1.2.0: every figure against a hand computation on tiny series; costs, strategies,
the exit cost, and the random-signal null. (Walk-forward on real data, the shuffled-label
control and the input checks: test_hub_backtest_v1_2_walk_forward.py.)"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickrun.hub import Hub, import_function

bt = import_function("hub://backtest:1.2").module()

PRICES = [100.0, 110.0, 99.0, 99.0, 108.9]  # bar returns 0, +10%, -10%, 0, +10%
SIGNALS = [1.0, 1.0, 0.0, 1.0, 1.0]  # the last is sold at the close: the book ends flat
C = 0.01  # 100 bp per side


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_every_figure_of_a_small_run_by_hand() -> None:
    res = bt.run_backtest(PRICES, SIGNALS, costs=bt.Costs(fee_bp=100), periods_per_year=1)
    f, s = res.frame, res.stats
    assert f["position"].tolist() == [1, 1, 0, 1, 0]  # closed at the end
    gross = [0, 0.10, -0.10, 0, 0.10]  # held over bars 1, 2, 4
    turnover = [1, 0, 1, 1, 1]  # buy@0, sell@2, buy@3, exit@4
    net = [g - C * u for g, u in zip(gross, turnover, strict=True)]
    np.testing.assert_allclose(f["gross_return"], gross, atol=1e-15)
    np.testing.assert_allclose(f["net_return"], net)
    equity = np.cumprod([1 + n for n in net])
    np.testing.assert_allclose(f["equity"], equity)
    assert s["gross_return"] == pytest.approx(1.1 * 0.9 * 1.1 - 1)
    assert s["net_return"] == s["cumulative_return"] == pytest.approx(equity[-1] - 1)
    assert s["fee_drag"] == pytest.approx(s["gross_return"] - s["net_return"])
    assert s["fees_paid"] == pytest.approx(
        C * (1 + equity[1] + equity[2] + equity[3])  # each cost on the equity before it
    )
    assert (s["trades"], s["turnover"]) == (4, 4)
    assert s["exposure"] == s["time_in_market"] == pytest.approx(3 / 4)  # bars 1..4 held: 3
    assert s["hit_rate"] == pytest.approx(2 / 3)  # bars 1 and 4 won, bar 2 lost
    # round trips: 0→2 (two bars, +10% then -10%) and 3→4 (one bar, +10%), each paying in and out
    first = 0.99 * 1.1 * 0.9 * 0.99 - 1
    second = 0.99 * 1.1 * 0.99 - 1
    assert s["round_trips"] == 2 and s["avg_holding_bars"] == pytest.approx(1.5)
    assert s["win_rate"] == pytest.approx(0.5)
    assert s["profit_factor"] == pytest.approx(second / -first)
    trips = bt.round_trips(f, bt.Costs(fee_bp=100))
    assert trips["return"].tolist() == pytest.approx([first, second])
    assert trips[["entry", "exit", "bars"]].values.tolist() == [[0, 2, 2], [3, 4, 1]]
    # drawdown from the peak after bar 1; under water over bars 2, 3, 4 (bar 0 alone before)
    assert s["max_drawdown"] == pytest.approx(1 - equity[3] / equity[1])
    assert s["max_drawdown_bars"] == 3
    # per-bar statistics over bars 1..4
    x = np.array(net[1:])
    mean, sd = x.mean(), math.sqrt(((x - x.mean()) ** 2).sum() / 3)
    sr = mean / sd
    assert s["sharpe"] == pytest.approx(sr)
    m2 = ((x - mean) ** 2).mean()
    skew, kurt = ((x - mean) ** 3).mean() / m2**1.5, ((x - mean) ** 4).mean() / m2**2
    assert (s["returns_skew"], s["returns_kurtosis"]) == pytest.approx((skew, kurt))
    se = math.sqrt((1 - skew * sr + (kurt - 1) / 4 * sr**2) / 3)
    assert s["sharpe_se"] == pytest.approx(se)
    assert s["psr"] == pytest.approx(normal_cdf(sr / se))
    assert (s["n_periods"], s["periods_per_year"]) == (4, 1)
    assert s["sortino"] == pytest.approx(mean / math.sqrt((np.minimum(x, 0) ** 2).mean()))
    annual = equity[-1] ** (1 / 4) - 1  # four bar returns = four "years" at 1 bar a year
    assert s["annualized_return"] == pytest.approx(annual)
    assert s["calmar"] == pytest.approx(annual / s["max_drawdown"])
    # break-even: at that cost per side the run ends where it started
    be = s["break_even_fee_bp"] * 1e-4
    assert (1 - be) * 1.1 * (0.9 - be) * (1 - be) * (1.1 - be) == pytest.approx(1.0)
    assert s["cost_per_side_bp"] == pytest.approx(100)
    # controls: buy-and-hold pays in at bar 0 and out at bar 4; long-when-flat is the same here
    assert s["bh_cumulative_return"] == pytest.approx(0.99 * 1.1 * 0.9 * 1.0 * 1.09 - 1)
    assert s["alf_cumulative_return"] == pytest.approx(s["bh_cumulative_return"])
    assert s["excess_return"] == pytest.approx(s["net_return"] - s["bh_cumulative_return"])


def test_the_exit_cost_and_an_open_book() -> None:
    costs = bt.Costs(fee_bp=100)
    closed = bt.run_backtest([100.0, 110.0], [1.0, 1.0], costs=costs).stats
    # bought at bar 0's close, sold at bar 1's (the last): +10% less two costs
    assert closed["net_return"] == pytest.approx(0.99 * (1.1 - 0.01) - 1)
    assert closed["turnover"] == 2 and closed["round_trips"] == 1
    frame = bt.simulate([100.0, 110.0], [1.0, 1.0], costs=costs, close_at_end=False)
    assert frame["equity"].iloc[-1] == pytest.approx(0.99 * 1.1)  # never paid out
    assert bt.round_trips(frame, costs)["bars"].tolist() == [2]  # still open at the end


def test_costs_spread_slippage_maker_and_short_funding() -> None:
    taker = bt.Costs(fee_bp=10, spread_bp=4, slippage_bp=3)
    assert taker.per_side == pytest.approx((10 + 2 + 3) * 1e-4)  # fee + half-spread + slip
    maker = bt.Costs(fee_bp=10, maker_fee_bp=-1, fill="maker", spread_bp=4, slippage_bp=3)
    assert maker.per_side == pytest.approx(-1e-4)  # a rebate; resting orders cross nothing
    with pytest.raises(ValueError, match="fill must be"):
        bt.Costs(fill="midpoint")
    # a short over two bars: the price falls 10% then rises 10%; borrow 100 bp a year at
    # 2 bars a year (50 bp a bar) plus funding 10 bp a bar, on the size held short
    shorts = bt.Costs(fee_bp=20, short_borrow_bp_year=100, short_funding_bp_bar=10)
    f = bt.simulate([100.0, 90.0, 99.0], [-1.0, -1.0, 0.0], costs=shorts, periods_per_year=2)
    np.testing.assert_allclose(f["funding"], [0, 0.006, 0.006])
    np.testing.assert_allclose(f["net_return"], [-0.002, 0.1 - 0.006, -0.1 - 0.006 - 0.002])
    s = bt.statistics(f, costs=shorts, periods_per_year=2)
    assert s["funding_paid"] == pytest.approx(0.006 * (0.998 + 0.998 * 1.094))
    assert s["fee_drag"] == pytest.approx(s["gross_return"] - s["net_return"])
    assert s["exposure"] == pytest.approx(1.0)
    # sized positions pay in proportion to what they trade
    half = bt.simulate([100.0, 110.0, 121.0], [0.5, 1.0, 1.0], costs=bt.Costs(fee_bp=100))
    np.testing.assert_allclose(half["turnover"], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(half["net_return"], [-0.005, 0.05 - 0.005, 0.1 - 0.01])


def test_break_even_fee_is_negative_when_the_run_loses_before_costs() -> None:
    s = bt.run_backtest([100.0, 90.0, 90.0], [1.0, 1.0, 0.0], costs=bt.Costs(fee_bp=5)).stats
    be = s["break_even_fee_bp"] * 1e-4
    assert be < 0  # only a rebate (of ~5.1% a side) would make it whole
    assert (1 - be) * 0.9 * (1 - be) == pytest.approx(1.0)  # in at bar 0, -10%, out at bar 2
    spread = bt.run_backtest(PRICES, SIGNALS, costs=bt.Costs(fee_bp=100, spread_bp=20)).stats
    # spread is held fixed: the break-even fee is the break-even cost less the half-spread
    plain = bt.run_backtest(PRICES, SIGNALS, costs=bt.Costs(fee_bp=100)).stats
    assert spread["break_even_fee_bp"] == pytest.approx(plain["break_even_fee_bp"] - 10)
    flat = bt.run_backtest([100.0, 101.0], [0.0, 0.0]).stats
    assert math.isnan(flat["break_even_fee_bp"]) and math.isnan(flat["win_rate"])


def test_fee_sweep_and_the_gross_figure() -> None:
    sweep = bt.fee_sweep(PRICES, SIGNALS, [0, 5, 100], costs=bt.Costs(), periods_per_year=1)
    gross = bt.run_backtest(PRICES, SIGNALS, costs=bt.Costs(fee_bp=100)).stats["gross_return"]
    assert sweep["fee_0bp_net_return"] == pytest.approx(gross)
    assert sweep["fee_100bp_net_return"] == pytest.approx(0.99 * 1.1 * 0.89 * 0.99 * 1.09 - 1)
    assert sweep["fee_0bp_net_return"] > sweep["fee_5bp_net_return"]


def test_strategy_threshold_band_and_minimum_holding() -> None:
    p = [0.60, 0.52, 0.47, 0.40, 0.56, 0.49, 0.58, np.nan]
    naive = bt.strategy_positions(p)
    assert naive.tolist() == [1, 1, 0, 0, 1, 0, 1, 0]
    assert bt.strategy_positions(p, threshold=0.55).tolist() == [1, 0, 0, 0, 1, 0, 1, 0]
    # band 0.05: no change while |p - 0.5| < 0.05 (0.52, 0.47, 0.49 keep the position)
    assert bt.strategy_positions(p, band=0.05).tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    shorts = bt.strategy_positions(p, band=0.05, allow_short=True)
    assert shorts.tolist() == [1, 1, 1, -1, 1, 1, 1, 0]
    # min_hold 3: the long taken at bar 0 earns 3 bars before it may go (bar 3); the next,
    # taken at bar 4, is held through bar 6 (0.49 at bar 5 does not close it); flat can
    # change at once
    assert bt.strategy_positions(p, min_hold=3).tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    assert bt.strategy_positions(p, min_hold=4).tolist() == [1, 1, 1, 1, 1, 0, 1, 1]
    with pytest.raises(ValueError, match="band"):
        bt.strategy_positions(p, band=0.5)


def test_probability_and_volatility_target_sizing() -> None:
    sized = bt.strategy_positions([0.8, 0.55, 0.3, 0.3], sizing="probability", allow_short=True)
    np.testing.assert_allclose(sized, [0.6, 0.1, -0.4, -0.4])
    prices = pd.Series(100 * np.cumprod(1 + np.random.default_rng(3).normal(0, 0.01, 200)))
    vol = bt.engine.causal_volatility(prices, halflife=10, periods_per_year=8760)
    sq = prices.pct_change() ** 2
    manual = np.sqrt(sq.ewm(halflife=10, min_periods=10).mean() * 8760)
    np.testing.assert_allclose(vol, manual)
    later = prices.copy()
    later.iloc[150:] *= 1.5  # a future jump changes nothing before it: causal
    np.testing.assert_allclose(
        bt.engine.causal_volatility(later, halflife=10, periods_per_year=8760)[:150], vol[:150]
    )
    pos = bt.strategy_positions(
        np.full(200, 0.7), sizing="vol_target", volatility=vol, vol_target=0.3, max_leverage=2
    )
    expected = np.nan_to_num(np.minimum(2, 0.3 / vol), nan=0.0)
    np.testing.assert_allclose(pos, expected)
    assert (pos[:9] == 0).all() and pos.max() <= 2


def test_always_long_when_flat_keeps_the_shorts() -> None:
    assert bt.controls.long_when_flat([-1, 0, 0.5, 0]).tolist() == [-1, 1, 0.5, 1]
    s = bt.run_backtest([100.0, 90.0, 99.0, 99.0], [-1.0, 0.0, 0.0, 0.0], costs=bt.Costs(0)).stats
    assert s["alf_cumulative_return"] == pytest.approx(1.1 * 1.1 * 1.0 - 1)  # short, long, long


def test_random_signal_null_matches_trades_time_in_market_and_turnover() -> None:
    rng = np.random.default_rng(7)
    p = 100 * np.cumprod(1 + rng.normal(0, 0.01, 400))
    proba = rng.uniform(0.3, 0.7, 400)  # long above 0.6, short below 0.4, held 3 bars at least
    pos = bt.strategy_positions(proba, threshold=0.6, allow_short=True, min_hold=3)
    costs = bt.Costs(fee_bp=10)
    strat = bt.run_backtest(p, pos, costs=costs).stats
    pos.iloc[-1] = 0.0  # what the run backtested: a closed book
    assert set(pos) == {-1.0, 0.0, 1.0} and strat["round_trips"] > 30
    paths = bt.random_paths(pos, n_paths=50, seed=11)
    assert paths.shape == (50, 400)
    np.testing.assert_array_equal(paths, bt.random_paths(pos, n_paths=50, seed=11))
    assert not np.array_equal(paths, bt.random_paths(pos, n_paths=50, seed=12))
    assert not any(np.array_equal(row, pos) for row in paths)
    for row in paths:
        s = bt.run_backtest(p, row, costs=costs).stats
        assert s["round_trips"] == strat["round_trips"]
        assert s["turnover"] == pytest.approx(strat["turnover"])
        assert s["time_in_market"] == pytest.approx(strat["time_in_market"])
        assert s["exposure"] == pytest.approx(strat["exposure"])
        assert sorted(bt.round_trips(bt.simulate(p, row, costs=costs))["bars"]) == sorted(
            bt.round_trips(bt.simulate(p, pos, costs=costs))["bars"]
        )
    null = bt.simulate_paths(p, paths, costs=costs, periods_per_year=8760)
    for i in (0, 17, 49):  # the vectorised null is the engine, path by path
        one = bt.run_backtest(p, paths[i], costs=costs).stats
        assert null["net_return"][i] == pytest.approx(one["net_return"])
        assert null["sharpe"][i] == pytest.approx(one["sharpe"])
    stats, table = bt.null_control(
        p, pos, strat["net_return"], costs=costs, periods_per_year=8760, n_paths=50, seed=11
    )
    np.testing.assert_allclose(table["net_return"], null["net_return"])
    below = (null["net_return"] < strat["net_return"]).sum()
    assert stats["null_percentile"] == pytest.approx(100 * below / 50)
    at_least = (null["net_return"] >= strat["net_return"]).sum()
    assert stats["null_p_value"] == pytest.approx((1 + at_least) / 51)


def test_rank_in_null_by_hand() -> None:
    r = bt.controls.rank_in_null(0.3, [0.1, 0.2, 0.3, 0.4])
    assert r["percentile"] == pytest.approx(100 * (2 + 0.5) / 4)
    assert r["p_value"] == pytest.approx((1 + 2) / 5)
    assert r["mean"] == pytest.approx(0.25)


def test_the_item_imports_its_files_from_a_copy_outside_the_package(tmp_path: Path) -> None:
    """A cached or private copy is imported by path, not as a package: engine.py and the other
    files listed in item.yaml still load, from beside backtest.py."""
    src = import_function("hub://backtest:1.2").folder
    shutil.copytree(src, tmp_path / "hub" / "backtest" / "1.2.0")
    fn = Hub([tmp_path / "hub"], bundled=False).import_function("hub://backtest:1.2.0")
    module = fn.module()
    assert not module.__name__.startswith("tickrun.hub.items")
    assert Path(module.engine.__file__).parent == tmp_path / "hub" / "backtest" / "1.2.0"
    s = module.run_backtest(PRICES, SIGNALS, costs=module.Costs(fee_bp=100)).stats
    assert s["round_trips"] == 2
