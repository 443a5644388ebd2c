"""backtest 1.2.0 on the shipped hourly BTCUSDT bars: a purged walk-forward end to end through
the handler, the shuffled-label control, and the inputs a model backtest refuses."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tickrun.hub import import_function

bt = import_function("hub://backtest:1.2").module()
mf = import_function("hub://market_features:1.2").module()

CONTRACT = ("sharpe", "periods_per_year", "n_periods", "returns_skew", "returns_kurtosis")


@pytest.fixture(scope="module")
def feats(hourly_bars: pd.DataFrame) -> pd.DataFrame:
    return mf.compute_features(hourly_bars.iloc[-3000:], windows="6,24")


def test_walk_forward_end_to_end_on_hourly_bars(
    feats, hourly_bars, fake_context, frame_item
) -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    bt.backtest(
        fake_context,
        dataset=frame_item(feats),
        prices=frame_item(hourly_bars),
        walk_forward_splits=3,
        band=0.02,
        min_hold=2,
        null_paths=40,
        CLASS_max_iter=300,
    )
    r = fake_context.results
    n = 3 * (len(feats) // 4)  # 3 test folds; the rows before the first only train
    assert r["bars"] == n and r["n_periods"] == n - 1 and r["wf_purge_bars"] == 1
    for key in (*CONTRACT, "sharpe_se", "psr", "gross_return", "net_return", "sortino"):
        assert np.isfinite(r[key]), key
    assert r["returns_kurtosis"] > 3  # hourly crypto returns: fat tails, Pearson scale
    assert 0 < r["sharpe_se"] < 10 and 0 <= r["psr"] <= 1
    assert r["fee_drag"] == pytest.approx(r["gross_return"] - r["net_return"])
    assert r["fee_10bp_net_return"] == pytest.approx(r["net_return"])  # default: 10 bp taker
    assert r["fee_0bp_net_return"] == pytest.approx(r["gross_return"])
    assert r["null_paths"] == 40 and 0 <= r["null_percentile"] <= 100
    assert r["null_q05_net_return"] <= r["null_mean_net_return"] <= r["null_q95_net_return"]
    # forecasts: what the logged predictions give, beside the base rate of the scored rows
    pred = fake_context.datasets["predictions"]
    labels = feats["label"].iloc[len(feats) - n :].to_numpy()
    assert pred["timestamp"].iloc[0] == pd.Timestamp(feats["timestamp"].iloc[len(feats) - n])
    assert len(pred) == n and pred["fold"].tolist()[:: n // 3][:3] == [1, 2, 3]
    assert r["oos_auc"] == pytest.approx(roc_auc_score(labels, pred["p_up"]))
    assert r["oos_log_loss"] == pytest.approx(log_loss(labels, pred["p_up"]))
    assert r["oos_base_rate"] == pytest.approx(labels.mean())
    assert 0.6 < r["oos_baseline_log_loss"] < 0.75
    # per fold: the folds chain into the whole run, and each has its own forecast figures
    folds = fake_context.datasets["walk_forward_folds"]
    assert folds["fold"].tolist() == [1, 2, 3] and folds["bars"].sum() == n
    assert (1 + folds["cumulative_return"]).prod() - 1 == pytest.approx(r["net_return"])
    assert (1 + folds["gross_return"]).prod() - 1 == pytest.approx(r["gross_return"])
    assert (1 + folds["bh_cumulative_return"]).prod() - 1 == pytest.approx(
        r["bh_cumulative_return"]
    )
    assert folds["auc"].between(0.3, 0.7).all() and folds["start"].is_monotonic_increasing
    # controls beside the result
    stamps = feats["timestamp"].iloc[len(feats) - n :]
    p = hourly_bars.set_index("timestamp")["close"].loc[stamps].to_numpy()
    # in at the first close, out at the last: the exit cost comes off the last bar's return
    held = 0.999 * p[-2] / p[0] * (p[-1] / p[-2] - 0.001)
    assert r["bh_cumulative_return"] == pytest.approx(held - 1)
    for key in ("shuffled_net_return", "shuffled_sharpe", "shuffled_auc", "alf_sharpe"):
        assert np.isfinite(r[key]), key
    curve = fake_context.datasets["equity_curve"]
    assert curve["position"].iloc[-1] == 0  # closed at the end
    assert curve["equity"].iloc[-1] == pytest.approx(1 + r["net_return"])
    for key in ("equity-curve", "walk-forward-folds", "null-distribution"):
        assert fake_context.artifacts[key]["body"][:4] == b"\x89PNG", key
    assert len(fake_context.datasets["null_distribution"]) == 40
    assert len(fake_context.datasets["trade_list"]) == r["round_trips"]


class Recorder:
    """Fits nothing; remembers which rows and labels each fit saw and predicts 0.6."""

    fits: list[tuple[np.ndarray, np.ndarray]] = []

    def __init__(self, **kwargs: Any) -> None:
        pass

    def fit(self, x: pd.DataFrame, y: Any) -> Recorder:
        Recorder.fits.append((x["bar"].to_numpy().copy(), np.asarray(y).copy()))
        return self

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        p = np.full(len(x), 0.6)
        return np.column_stack([1 - p, p])


def test_shuffled_label_control_refits_the_same_pipeline_on_permuted_labels(
    feats, hourly_bars, fake_context, frame_item, monkeypatch
) -> None:
    module = types.ModuleType("backtest_v12_recorder")
    module.Recorder = Recorder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "backtest_v12_recorder", module)
    Recorder.fits.clear()
    data = feats.assign(bar=np.arange(len(feats)))
    bt.backtest(
        fake_context,
        dataset=frame_item(data),
        prices=frame_item(hourly_bars),
        walk_forward_splits=3,
        model_class="backtest_v12_recorder.Recorder",
        scale=False,
        seed=5,
        null_paths=10,
    )
    assert len(Recorder.fits) == 6  # 3 folds, then the same 3 on shuffled labels
    labels = data["label"].to_numpy()
    permuted = np.random.default_rng(5).permutation(labels)
    for (rows, y), (rows_sh, y_sh) in zip(Recorder.fits[:3], Recorder.fits[3:], strict=True):
        np.testing.assert_array_equal(rows, rows_sh)  # same windows, same purge
        np.testing.assert_array_equal(y, labels[rows])
        np.testing.assert_array_equal(y_sh, permuted[rows])
        assert not np.array_equal(y, y_sh)
    r = fake_context.results
    # both models say 0.6 everywhere: long throughout, the same run
    assert r["shuffled_net_return"] == pytest.approx(r["net_return"])
    assert r["round_trips"] == 1 and r["null_percentile"] == pytest.approx(50)
    bt.backtest(
        fake_context,
        dataset=frame_item(data),
        prices=frame_item(hourly_bars),
        walk_forward_splits=3,
        model_class="backtest_v12_recorder.Recorder",
        scale=False,
        shuffled_label_control=False,
        null_paths=10,
    )
    assert len(Recorder.fits) == 9  # no shuffled refits


@pytest.fixture
def model_case(feats) -> tuple[pd.DataFrame, Any]:
    from sklearn.linear_model import LogisticRegression

    cols = mf.feature_columns(feats)
    model = LogisticRegression(max_iter=300).fit(feats[cols].iloc[:2000], feats["label"][:2000])
    return feats.iloc[2000:].reset_index(drop=True), model


def test_a_model_backtest_refuses_rows_out_of_time_order_or_with_gaps(
    model_case, fake_context, frame_item, hourly_bars
) -> None:
    test_set, model = model_case
    px = frame_item(hourly_bars)
    shuffled = test_set.sample(frac=1.0, random_state=0)  # a random split's test set
    with pytest.raises(ValueError, match="strictly increase.*time order"):
        bt.backtest(fake_context, dataset=frame_item(shuffled), prices=px, model=model)
    gappy = test_set.drop(index=range(100, 106)).reset_index(drop=True)
    with pytest.raises(ValueError, match=r"not consecutive: 1 gap.*largest 7.0 bars"):
        bt.backtest(fake_context, dataset=frame_item(gappy), prices=px, model=model)
    bt.backtest(fake_context, dataset=frame_item(test_set), prices=px, model=model, null_paths=5)
    assert fake_context.results["bar_gaps"] == 0 and fake_context.results["bars"] == len(test_set)


def test_probability_column_and_1_1_fee_rate(
    model_case, fake_context, frame_item, hourly_bars
) -> None:
    test_set, model = model_case
    cols = mf.feature_columns(test_set)
    probs = test_set.assign(p_up=model.predict_proba(test_set[cols])[:, 1])
    common: dict[str, Any] = {"prices": frame_item(hourly_bars), "null_paths": 5, "band": 0.03}
    bt.backtest(fake_context, dataset=frame_item(test_set), model=model, fee_rate=0.002, **common)
    from_model = dict(fake_context.results)
    bt.backtest(
        fake_context,
        dataset=frame_item(probs),
        probability_column="p_up",
        fee_bp=20,
        **common,
    )
    assert from_model["cost_per_side_bp"] == pytest.approx(20)
    for key in ("net_return", "gross_return", "trades", "sharpe", "break_even_fee_bp"):
        assert fake_context.results[key] == pytest.approx(from_model[key]), key


def test_the_dataset_metadata_names_targets_and_the_label_horizon(
    feats, hourly_bars, fake_context, frame_item
) -> None:
    """Contract 1: columns the producer lists as targets are never features, and its
    label_horizon_bars sets the purge when it exceeds what the prices show."""
    leaky = feats.assign(fwd_peek=feats["label"])  # the label itself, under a plain name
    item = frame_item(leaky)
    item.meta = types.SimpleNamespace(  # type: ignore[attr-defined]
        meta={"targets": ["fwd_peek", "label"], "label_horizon_bars": 6}
    )
    kw: dict[str, Any] = {"prices": frame_item(hourly_bars), "walk_forward_splits": 3}
    bt.backtest(fake_context, dataset=item, null_paths=5, shuffled_label_control=False, **kw)
    assert fake_context.results["wf_purge_bars"] == 6
    assert fake_context.results["oos_auc"] < 0.65
    bt.backtest(
        fake_context,
        dataset=frame_item(leaky),
        null_paths=5,
        shuffled_label_control=False,
        **kw,
    )
    assert fake_context.results["oos_auc"] > 0.99  # what the metadata kept out
    assert fake_context.results["wf_purge_bars"] == 1


def test_null_paths_0_turns_the_random_signal_control_off(
    model_case, fake_context, frame_item, hourly_bars
) -> None:
    test_set, model = model_case
    bt.backtest(
        fake_context,
        dataset=frame_item(test_set),
        prices=frame_item(hourly_bars),
        model=model,
        null_paths=0,
    )
    assert "net_return" in fake_context.results
    assert not [k for k in fake_context.results if k.startswith("null_")]
