"""backtest 1.1.0: purged walk-forward folds and the consecutive-bars check of model mode."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tickrun.hub import import_function

bt = import_function("hub://backtest:1.1").module()
bt_1_0 = import_function("hub://backtest:1.0.0").module()
mf = import_function("hub://market_features:1.1").module()
HORIZON = 3


class Recorder:
    """An estimator that remembers which bars it was fit on and which it scored, per fold."""

    fits: list[np.ndarray] = []
    scored: list[np.ndarray] = []

    def __init__(self, **kwargs: Any) -> None:
        pass

    def fit(self, x: pd.DataFrame, y: Any) -> Recorder:
        Recorder.fits.append(x["bar"].to_numpy().copy())
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        Recorder.scored.append(x["bar"].to_numpy().copy())
        p = np.full(len(x), 0.6)
        return np.column_stack([1 - p, p])


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("backtest_recorder")
    module.Recorder = Recorder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "backtest_recorder", module)
    Recorder.fits.clear()
    Recorder.scored.clear()
    return "backtest_recorder.Recorder"


@pytest.fixture
def walk_forward(hourly_bars, fake_context, frame_item, recorder) -> Any:
    """Run a backtest version's walk-forward mode over ``feats`` with the Recorder model."""

    def run(module: Any, feats: pd.DataFrame, splits: int, **kwargs: Any) -> None:
        Recorder.fits.clear()
        Recorder.scored.clear()
        module.backtest(
            fake_context,
            dataset=frame_item(feats),
            prices=frame_item(hourly_bars),
            walk_forward_splits=splits,
            model_class=recorder,
            scale=False,
            **kwargs,
        )

    return run


def features(hourly_bars: pd.DataFrame, n: int = 1500) -> pd.DataFrame:
    feats = mf.compute_features(hourly_bars.iloc[-n:], windows="6,24", horizon=HORIZON)
    return feats.assign(bar=np.arange(len(feats)))  # a feature that names the row


def leaks(feats: pd.DataFrame, prices: pd.DataFrame) -> list[str]:
    """Training rows whose label was computed from a price inside the fold they are tested on."""
    stamps = pd.to_datetime(feats["timestamp"], utc=True)
    price_times = pd.to_datetime(prices["timestamp"], utc=True).reset_index(drop=True)
    out = []
    for fold, (train, test) in enumerate(zip(Recorder.fits, Recorder.scored, strict=True), 1):
        first_test = stamps.iloc[test.min()]
        for row in train:
            # label_t = 1 if close_{t+h} / close_t > 1: it is priced at bar t + h
            t = stamps.iloc[row]
            priced_at = price_times.iloc[int(np.searchsorted(price_times, t)) + HORIZON]
            if priced_at >= first_test:
                out.append(f"fold {fold}: row {row} is labelled with the price at {priced_at}")
    return out


def test_walk_forward_purges_the_label_horizon(hourly_bars, fake_context, walk_forward) -> None:
    feats = features(hourly_bars)
    # the target really looks HORIZON bars ahead
    close = hourly_bars.set_index(pd.to_datetime(hourly_bars["timestamp"], utc=True))["close"]
    t0 = pd.to_datetime(feats["timestamp"].iloc[0], utc=True)
    i0 = close.index.get_loc(t0)
    assert feats["future_return"].iloc[0] == pytest.approx(
        close.iloc[i0 + HORIZON] / close.iloc[i0] - 1
    )
    walk_forward(bt, feats, 4)
    assert fake_context.results["wf_purge_bars"] == HORIZON  # inferred from future_return
    assert len(Recorder.fits) == 4
    assert leaks(feats, hourly_bars) == []
    for train, test in zip(Recorder.fits, Recorder.scored, strict=True):
        assert train.max() + HORIZON < test.min()  # the gap sits right before the fold
        assert train.max() + HORIZON + 1 == test.min()
    # the folds themselves are those of 1.0.0: same out-of-sample bars
    assert fake_context.results["bars"] == 4 * (len(feats) // 5)


def test_without_the_purge_training_labels_look_into_the_test_fold(
    hourly_bars, walk_forward
) -> None:
    feats = features(hourly_bars)
    walk_forward(bt_1_0, feats, 4)
    assert len(leaks(feats, hourly_bars)) == 4 * HORIZON  # what 1.1.0 fixes


def test_explicit_horizon_and_the_default_of_one_bar(
    hourly_bars, fake_context, walk_forward
) -> None:
    feats = features(hourly_bars)
    walk_forward(bt, feats, 3, horizon=7)
    assert fake_context.results["wf_purge_bars"] == 7
    assert all(tr.max() + 7 < te.min() for tr, te in zip(Recorder.fits, Recorder.scored))
    no_target = feats.drop(columns=["future_return"])  # nothing to infer from: 1 bar
    walk_forward(bt, no_target, 3)
    assert fake_context.results["wf_purge_bars"] == 1
    assert all(tr.max() + 1 < te.min() for tr, te in zip(Recorder.fits, Recorder.scored))


def test_infer_horizon_and_purged_splits() -> None:
    prices = pd.Series(100 * np.cumprod(1 + np.random.default_rng(1).normal(0, 0.01, 300)))
    for h in (1, 2, 5, 24):
        df = pd.DataFrame({"close": prices, "future_return": prices.shift(-h) / prices - 1})
        assert bt.infer_horizon(df) == h
    assert bt.infer_horizon(pd.DataFrame({"close": prices})) is None
    for train, test in bt.purged_splits(100, 4, 5):
        assert train.max() + 5 < test.min()
    with pytest.raises(ValueError, match="too few"):
        bt.purged_splits(10, 4, 5)


@pytest.fixture
def model_case(hourly_bars) -> tuple[pd.DataFrame, Any]:
    from sklearn.linear_model import LogisticRegression

    feats = mf.compute_features(hourly_bars.iloc[-1200:], windows="6,24")
    cols = mf.feature_columns(feats)
    model = LogisticRegression(max_iter=200).fit(feats[cols].iloc[:800], feats["label"][:800])
    return feats.iloc[800:].reset_index(drop=True), model


def test_model_mode_refuses_bars_that_skip_time(
    model_case, fake_context, frame_item, hourly_bars
) -> None:
    test_set, model = model_case
    gappy = test_set.drop(index=range(100, 106)).reset_index(drop=True)  # 6 hours missing
    with pytest.raises(ValueError, match=r"not consecutive: 1 gap.*largest 7.0 bars"):
        bt.backtest(
            fake_context, dataset=frame_item(gappy), prices=frame_item(hourly_bars), model=model
        )
    bt.backtest(
        fake_context,
        dataset=frame_item(gappy),
        prices=frame_item(hourly_bars),
        model=model,
        allow_gaps=True,
    )
    assert fake_context.results["bar_gaps"] == 1
    assert fake_context.results["largest_gap_bars"] == pytest.approx(7.0)
    assert fake_context.results["bars"] == len(gappy)


def test_model_mode_on_consecutive_bars_and_repeated_stamps(
    model_case, fake_context, frame_item, hourly_bars
) -> None:
    test_set, model = model_case
    bt.backtest(
        fake_context, dataset=frame_item(test_set), prices=frame_item(hourly_bars), model=model
    )
    assert fake_context.results["bar_gaps"] == 0
    assert fake_context.results["bars"] == len(test_set)
    twice = pd.concat([test_set.iloc[:50], test_set.iloc[49:100]], ignore_index=True)
    with pytest.raises(ValueError, match="strictly increase"):
        bt.backtest(
            fake_context, dataset=frame_item(twice), prices=frame_item(hourly_bars), model=model
        )
