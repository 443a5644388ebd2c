from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickrun.hub import import_function

mf = import_function("hub://market_features:1.1").module()
mf_old = import_function("hub://market_features:1.0").module()


@pytest.fixture
def bars(hourly_bars: pd.DataFrame) -> pd.DataFrame:
    return hourly_bars.iloc[-3000:].reset_index(drop=True)


@pytest.mark.parametrize("module", [mf, mf_old], ids=["1.1", "1.0"])
def test_changing_future_bars_never_changes_past_features(module, bars: pd.DataFrame) -> None:
    cut = 2000
    base = module.compute_features(bars)
    rng = np.random.default_rng(7)
    changed = bars.copy()
    factor = rng.uniform(0.5, 1.5, size=len(bars) - cut - 1)
    for col in ("open", "high", "low", "close", "volume"):
        changed.loc[cut + 1 :, col] = changed.loc[cut + 1 :, col].to_numpy() * factor
    other = module.compute_features(changed)
    features = [c for c in base.columns if c not in ("label", "future_return", "timestamp")]
    past_base = base[base["timestamp"] <= bars["timestamp"][cut]].set_index("timestamp")
    past_other = other[other["timestamp"] <= bars["timestamp"][cut]].set_index("timestamp")
    assert len(past_base) > 1500
    pd.testing.assert_frame_equal(past_base[features], past_other[features])
    # labels look one bar ahead: all but the one at the cut are unchanged
    assert (past_base["label"].iloc[:-1] == past_other["label"].iloc[:-1]).all()
    # …and the future really did change, so the comparison had teeth
    future = base["timestamp"] > bars["timestamp"][cut + 80]
    assert not np.allclose(base.loc[future, "sma_ratio_24"], other.loc[future, "sma_ratio_24"])


def test_features_on_the_full_hourly_history(hourly_bars: pd.DataFrame) -> None:
    frame = mf.compute_features(hourly_bars, windows="6,24")
    cols = mf.feature_columns(frame)
    assert {
        "ret_1",
        "sma_ratio_24",
        "volatility_6",
        "rsi_14",
        "mfi_14",
        "volume_ratio_24",
        "trades_ratio_6",
    } <= set(cols)
    assert not frame[cols].isna().any().any()
    assert np.isfinite(frame[cols].to_numpy()).all()
    assert frame["rsi_14"].between(0, 100).all() and frame["mfi_14"].between(0, 100).all()
    assert set(frame["label"].unique()) == {0, 1}
    # the label is the sign of the next bar's return
    close = hourly_bars["close"].to_numpy()
    idx = frame.index[100]
    ts = frame.loc[idx, "timestamp"]
    t = int(np.flatnonzero(hourly_bars["timestamp"].to_numpy() == ts)[0])
    assert frame.loc[idx, "label"] == int(close[t + 1] > close[t])
    # lost rows: the 24 warm-up bars of the longest window, and the last bar (no next bar)
    assert len(frame) == len(hourly_bars) - 24 - 1


def test_rsi_and_returns_by_hand() -> None:
    closes = [10.0, 11.0, 10.5, 11.5, 11.0, 12.0]
    bars = pd.DataFrame(
        {"open": closes, "high": closes, "low": closes, "close": closes, "volume": [1.0] * 6}
    )
    frame = mf.compute_features(
        bars, windows=[2], rsi_window=3, mfi_window=3, label=None, dropna=False
    )
    # last 3 moves: +1.0, -0.5, +1.0 → gains 2.0, losses 0.5 → RSI = 100·2/2.5
    assert frame["rsi_3"].iloc[-1] == pytest.approx(80.0)
    assert frame["ret_2"].iloc[-1] == pytest.approx(12.0 / 11.5 - 1)
    assert frame["sma_ratio_2"].iloc[-1] == pytest.approx(12.0 / 11.5 - 1)
    assert np.isnan(frame["rsi_3"].iloc[2])  # not enough bars yet


def test_return_label_and_horizon(bars: pd.DataFrame) -> None:
    frame = mf.compute_features(bars, label="return", horizon=3)
    first = frame.iloc[0]
    t = int(np.flatnonzero(bars["timestamp"].to_numpy() == first["timestamp"])[0])
    assert first["label"] == pytest.approx(bars["close"][t + 3] / bars["close"][t] - 1)
    with pytest.raises(ValueError, match="label must be"):
        mf.compute_features(bars, label="nope")


def test_streaming_window_gives_the_batch_features(bars: pd.DataFrame) -> None:
    window = mf.FeatureWindow("6,24,72")
    batch = mf.compute_features(bars, label=None, dropna=False)
    outputs = []
    for row in bars.iloc[-300:].to_dict("records"):
        outputs.append(window.update(row))
    assert outputs[window.size - 2] is None and outputs[window.size - 1] is not None
    streamed = pd.DataFrame([o for o in outputs if o is not None])
    expected = batch.iloc[-len(streamed) :].reset_index(drop=True)
    cols = mf.feature_columns(expected)
    np.testing.assert_allclose(
        streamed[cols].to_numpy(float), expected[cols].to_numpy(float), rtol=1e-9, atol=1e-12
    )


def test_streaming_handler_accepts_binance_klines(bars: pd.DataFrame) -> None:
    class Ctx:
        class user_data:  # noqa: N801 - nuclio's attribute name
            pass

    ctx = Ctx()
    mf.init_context(ctx)
    reply = None
    for row in bars.iloc[:80].itertuples():
        kline = {
            "e": "kline",
            "k": {
                "t": row.timestamp,
                "o": str(row.open),
                "h": str(row.high),
                "l": str(row.low),
                "c": str(row.close),
                "v": str(row.volume),
                "n": row.trades,
            },
        }
        reply = mf.handler(ctx, type("E", (), {"body": kline})())
    assert reply["ready"] is True
    assert reply["features"]["rsi_14"] == pytest.approx(
        mf.compute_features(bars.iloc[:80], label=None, dropna=False)["rsi_14"].iloc[-1]
    )
    bad = mf.handler(ctx, type("E", (), {"body": {"k": {"o": 1}}})())
    assert bad[0] == 400


def test_featurize_handler_logs_a_dataset(bars, fake_context, frame_item) -> None:
    mf.featurize(fake_context, dataset=frame_item(bars), windows="6,24")
    frame = fake_context.datasets["features"]
    assert fake_context.results["rows"] == len(frame) > 2900
    assert 0.3 < fake_context.results["label_up_fraction"] < 0.7
