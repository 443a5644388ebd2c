"""Streaming features per bar: ``hub://market_features:1.2`` (O(1) running sums; the window
alone and the whole Nuclio handler fed Binance kline events) vs 1.1's ``FeatureWindow`` (a pandas
recompute per bar; the baseline) and vs the batch ``compute_features`` over the month (its cost
per bar), on the January 2024 one-minute klines, all measured in this run.

    python -m bench.features [--rounds 3] [--baseline-bars 300]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd

from tickrun.hub import import_function
from tickrun.hub.sampledata import MINUTE, market_data
from tickrun.triggers.kafka.replay import kline_event, messages, read_klines

COLUMNS = ["open", "high", "low", "close", "volume", "trades"]


class _Ctx:
    def __init__(self) -> None:
        self.user_data = type("UserData", (), {})()


class _Event:
    __slots__ = ("body",)

    def __init__(self, body: Any) -> None:
        self.body = body


def best(rounds: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Fastest of ``rounds`` runs: (seconds, items done)."""
    times = []
    done = 0
    for _ in range(rounds):
        start = time.perf_counter()
        done = fn()
        times.append(time.perf_counter() - start)
    return min(times), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-bars", type=int, default=300, help="bars through 1.1")
    args = parser.parse_args()

    mf = import_function("hub://market_features:1.2").module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 1.1 is deprecated; it is the baseline here
        mf11 = import_function("hub://market_features:1.1").module()
    path = market_data(MINUTE)
    bars = mf.bars_from_klines(pd.read_csv(path))
    rows = bars[COLUMNS].to_numpy(float).tolist()
    n = len(rows)
    features = len(mf.IncrementalFeatures().names)

    def window12() -> int:
        window = mf.IncrementalFeatures()
        push = window.push
        for row in rows:
            push(*row)
        return n

    # the handler as the Kafka trigger calls it: decoded kline events, one closed kline per bar
    events = [_Event(kline_event(k)) for k in read_klines(path)]

    def handler12() -> int:
        ctx = _Ctx()
        mf.init_context(ctx)
        for event in events:
            mf.handler(ctx, event)
        return n

    # a live-like stream: 2 intra-bar updates per bar and a redelivery after every 5th bar
    replay = messages(read_klines(path), partial_updates=2, redeliver_every=5)
    live = [_Event(m.event) for m in replay]

    def handler12_live() -> int:
        ctx = _Ctx()
        mf.init_context(ctx)
        for event in live:
            mf.handler(ctx, event)
        return n

    stamps = bars["timestamp"].tolist()
    records = [
        {**r, "timestamp": t} for r, t in zip(bars[COLUMNS].to_dict("records"), stamps, strict=True)
    ]
    warm = mf11.FeatureWindow().size

    def window11() -> int:
        window = mf11.FeatureWindow()
        for record in records[:warm]:
            window.update(record)
        start = time.perf_counter()
        for record in records[warm : warm + args.baseline_bars]:
            window.update(record)
        timings["window11"] = time.perf_counter() - start
        return args.baseline_bars

    def batch() -> int:
        mf.compute_features(bars, label=None, dropna=False)
        return n

    timings: dict[str, float] = {}
    t12, _ = best(args.rounds, window12)
    th, _ = best(args.rounds, handler12)
    tl, _ = best(args.rounds, handler12_live)
    window11()
    t11, n11 = timings["window11"], args.baseline_bars
    tb, _ = best(args.rounds, batch)

    rate12, rate_h, rate_l, rate11, rate_b = n / t12, n / th, n / tl, n11 / t11, n / tb
    print(
        f"market_features streaming, {n:,} real 1-minute BTCUSDT bars, {features} features, "
        f"windows 6,24,72, RSI/MFI 14 (best of {args.rounds}; 1.1 over {n11} bars, once)"
    )
    print(f"{'path':<52}{'bars/s':>12}{'us/bar':>10}{'vs 1.1':>10}")
    lines = [
        ("1.2 IncrementalFeatures.push (the window)", rate12),
        ("1.2 handler, one closed kline event per bar", rate_h),
        ("1.2 handler, live-like (+2 partials, redeliveries)", rate_l),
        ("1.1 FeatureWindow.update (baseline)", rate11),
        ("batch compute_features over the month (per bar)", rate_b),
    ]
    for label, rate in lines:
        print(f"{label:<52}{rate:>12,.0f}{1e6 / rate:>10.1f}{rate / rate11:>9.0f}x")
    print(
        f"per bar, 1.2's window costs {rate_b / rate12:.0f}x the batch's amortized cost "
        f"({1e6 / rate12:.1f} vs {1e6 / rate_b:.2f} us), without needing the history; 1.1's "
        f"costs {rate_b / rate11:,.0f}x"
    )


if __name__ == "__main__":
    main()
