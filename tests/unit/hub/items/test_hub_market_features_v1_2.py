"""hub://market_features:1.2 — the streaming handler fed a real exchange stream (the January 2024
minute klines replayed as Binance websocket events, with partial updates, redeliveries, late
and conflicting klines and gaps) emits exactly the bars and features of the batch path.

Tolerances asserted (``b`` the batch value, ``x`` an exact two-pass reference computed here):
``|a - b| <= 1e-8 * max(1, |b|)`` and ``|a - x| <= 1e-12 * max(1, |x|)``; NaN exactly where the
other is NaN.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from tickrun.functions.modules import import_file
from tickrun.hub import Hub, import_function
from tickrun.hub.sampledata import MINUTE, market_data
from tickrun.triggers.kafka.replay import kline_event, messages, read_klines

mf = import_function("hub://market_features:1.2").module()
with warnings.catch_warnings():  # 1.1 is deprecated: here it is the reference for the batch path
    warnings.simplefilter("ignore")
    mf11 = import_function("hub://market_features:1.1").module()

N_KLINES = 12_000
BATCH_TOL = 1e-8
EXACT_TOL = 1e-12
# bars (positions in the file) lost on the way: gaps of 3, 1 then 10 during the refill, 100
DROPPED = {*range(3000, 3003), 5000, *range(5030, 5040), *range(8000, 8100)}


@pytest.fixture(scope="module")
def klines() -> pd.DataFrame:
    return pd.read_csv(market_data(MINUTE), nrows=N_KLINES)


@pytest.fixture(scope="module")
def minute_bars(klines: pd.DataFrame) -> pd.DataFrame:
    return mf.bars_from_klines(klines)


class Ctx:
    """The part of a Nuclio context the handler uses."""

    def __init__(self) -> None:
        self.user_data = type("UserData", (), {})()
        self.warnings: list[dict[str, Any]] = []
        outer = self

        class Logger:
            def warn_with(self, message: str, **kw: Any) -> None:
                outer.warnings.append(kw)

            info_with = debug_with = error_with = warn_with

        self.logger = Logger()


class Event:
    def __init__(self, body: Any, method: str = "POST", kind: str = "http") -> None:
        self.body = body
        self.method = method
        self.trigger = type("Trigger", (), {"kind": kind})()


def started(monkeypatch: pytest.MonkeyPatch, **env: str) -> Ctx:
    for key in ("FEATURE_WINDOWS", "RSI_WINDOW", "MFI_WINDOW", "BAR_INTERVAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = Ctx()
    mf.init_context(ctx)
    return ctx


def adversarial_stream() -> tuple[list[bytes], dict[str, int]]:
    """The replay's records as JSON bytes, as Kafka delivers them: 2 partial updates per bar, the
    previous bar redelivered after every 5th, the DROPPED bars' records lost (three turn up
    late), and (seeded) older klines re-sent late, a conflicting copy of a just-closed kline,
    late partials."""
    rng = np.random.default_rng(12)
    path = market_data(MINUTE)
    closed: list[dict[str, Any]] = [kline_event(k) for k in read_klines(path, limit=N_KLINES)]
    out: list[bytes] = []
    tally = {"unclosed": 0, "conflicting": 0}
    for msg in messages(read_klines(path, limit=N_KLINES), partial_updates=2, redeliver_every=5):
        if msg.bar in DROPPED:
            continue
        out.append(json.dumps(msg.event).encode())
        tally["unclosed"] += not msg.closed
        if not msg.closed or msg.redelivery:
            continue
        if msg.bar % 97 == 0 and msg.bar > 200:  # an older kline, late
            out.append(json.dumps(closed[msg.bar - int(rng.integers(2, 150))]).encode())
        if msg.bar in (3010, 5045, 8150):  # a lost kline turns up after the stream went on
            out.append(json.dumps(closed[msg.bar - 9]).encode())
        if msg.bar % 500 == 1:  # the same open time again, other values: the first one counts
            copy = json.loads(json.dumps(msg.event))
            copy["k"]["c"] = str(float(copy["k"]["c"]) * 1.01)
            out.append(json.dumps(copy).encode())
            tally["conflicting"] += 1
        if msg.bar % 300 == 7:  # a late intra-bar update of the bar just closed
            late = json.loads(json.dumps(msg.event))
            late["k"]["x"] = False
            out.append(json.dumps(late).encode())
            tally["unclosed"] += 1
    return out, tally


def exact_features(bars: pd.DataFrame, windows: tuple[int, ...] = (6, 24, 72)) -> pd.DataFrame:
    """The features by their definitions, each window summed afresh (two-pass variance):
    independent of both the running sums and pandas' rolling state."""
    c, v, t = (bars[k].to_numpy(float) for k in ("close", "volume", "trades"))
    o, h, lo = (bars[k].to_numpy(float) for k in ("open", "high", "low"))
    n = len(c)

    def rolling(x: np.ndarray, w: int, fn: Any) -> np.ndarray:
        res = np.full(n, np.nan)
        res[w - 1 :] = fn(sliding_window_view(x, w))
        return res

    def mean(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=-1)

    def std(x: np.ndarray) -> np.ndarray:
        return x.std(axis=-1, ddof=1)

    lr = np.r_[np.nan, np.diff(np.log(c))]
    hl = (h - lo) / c
    out = {"ret_1": np.r_[np.nan, c[1:] / c[:-1] - 1], "log_ret_1": lr, "hl_range": hl}
    out["body"] = (c - o) / o
    with np.errstate(invalid="ignore", divide="ignore"):
        for w in windows:
            out[f"ret_{w}"] = np.r_[np.full(w, np.nan), c[w:] / c[:-w] - 1]
            out[f"sma_ratio_{w}"] = c / rolling(c, w, mean) - 1
            out[f"volatility_{w}"] = rolling(lr, w, std)
            vmean, vstd = rolling(v, w, mean), rolling(v, w, std)
            out[f"volume_ratio_{w}"] = np.where(vmean > 0, v / vmean, np.nan)
            out[f"volume_z_{w}"] = np.where(vstd > 0, (v - vmean) / vstd, np.nan)
            out[f"range_mean_{w}"] = rolling(hl, w, mean)
            tmean = rolling(t, w, mean)
            out[f"trades_ratio_{w}"] = np.where(tmean > 0, t / tmean, np.nan)
        d = np.r_[np.nan, np.diff(c)]
        gain = rolling(np.maximum(d, 0), 14, mean)
        loss = rolling(np.maximum(-d, 0), 14, mean)
        out["rsi_14"] = np.where(gain + loss > 0, 100 * gain / (gain + loss), 50.0)
        typ = (h + lo + c) / 3
        move = np.r_[np.nan, np.diff(typ)]
        pos = rolling(np.where(move > 0, typ * v, 0.0), 14, lambda x: x.sum(axis=-1))
        neg = rolling(np.where(move < 0, typ * v, 0.0), 14, lambda x: x.sum(axis=-1))
        mfi = np.where(pos + neg > 0, 100 * pos / (pos + neg), 50.0)
        out["mfi_14"] = np.where(np.arange(n) >= 14, mfi, np.nan)
    return pd.DataFrame(out).assign(timestamp=bars["timestamp"].to_numpy())


def assert_close(a: np.ndarray, b: np.ndarray, tol: float, what: str) -> float:
    """|a - b| <= tol * max(1, |b|) elementwise, NaN where b is NaN; returns the worst ratio."""
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{what}: NaN positions")
    ok = ~np.isnan(b)
    err = np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(b[ok]))
    assert err.size and err.max() <= tol, f"{what}: worst {err.max():.3g} > {tol}"
    return float(err.max())


def test_replayed_exchange_stream_gives_the_batch_features(
    monkeypatch: pytest.MonkeyPatch, klines: pd.DataFrame, minute_bars: pd.DataFrame
) -> None:
    ctx = started(monkeypatch)
    records, tally = adversarial_stream()
    outputs = [mf.handler(ctx, Event(body)) for body in records]
    emitted = [o for o in outputs if o is not None]
    # nothing but new closed bars came out, each once, in order
    times = [o["open_time"] for o in emitted]
    assert times == sorted(set(times)) and len(times) > 10_000
    assert all(o["symbol"] == "BTCUSDT" for o in emitted)

    kept = minute_bars.drop(index=sorted(DROPPED)).reset_index(drop=True)
    batch = mf.compute_features(kept, label=None, interval="1m")  # dropna: the gap rule
    assert times == batch["timestamp"].tolist()  # the same bars, no more, no fewer
    cols = mf.feature_columns(batch)
    assert [list(o["features"]) for o in emitted[:1]] == [cols]
    streamed = np.array([[o["features"][c] for c in cols] for o in emitted])
    assert_close(streamed, batch[cols].to_numpy(float), BATCH_TOL, "stream vs batch")
    assert [o["close"] for o in emitted] == batch["timestamp"].map(
        kept.set_index("timestamp")["close"]
    ).tolist()

    # without `interval` (1.1's rows) the emitted bars are a subset with the same values
    plain = mf.compute_features(kept, label=None).set_index("timestamp").loc[times, cols]
    assert len(plain) < len(mf.compute_features(kept, label=None))
    assert_close(streamed, plain.to_numpy(float), BATCH_TOL, "stream vs batch (no interval)")

    exact = exact_features(kept).set_index("timestamp").loc[times, cols]
    assert_close(streamed, exact.to_numpy(float), EXACT_TOL, "stream vs exact")

    # each gap is reported on the first bar out after the window refilled
    gaps = [o["gap"] for o in emitted if "gap" in o]
    open_times = klines["open_time"].to_numpy()
    assert gaps == [
        {"previous_open_time": int(open_times[2999]), "open_time": int(open_times[3003]),
         "missing_bars": 3, "gaps": 1},
        {"previous_open_time": int(open_times[5029]), "open_time": int(open_times[5040]),
         "missing_bars": 10, "gaps": 2},
        {"previous_open_time": int(open_times[7999]), "open_time": int(open_times[8100]),
         "missing_bars": 100, "gaps": 1},
    ]  # fmt: skip
    # after the gap the window refills: 72 bars in, nothing out, then the 73rd bar is emitted
    restart = times.index(int(open_times[3003 + 72]))
    assert times[restart - 1] == open_times[2999] and "gap" in emitted[restart]
    stats = mf.handler(ctx, Event(b"", method="GET"))["symbols"]["BTCUSDT"]
    assert stats["gaps"] == 4 and [w["missing_bars"] for w in ctx.warnings] == [3, 1, 10, 100]
    assert (
        ctx.warnings[0]["symbol"] == "BTCUSDT" and ctx.warnings[0]["open_time"] == open_times[3003]
    )
    assert stats["accepted"] == N_KLINES - len(DROPPED)
    assert stats["emitted"] == len(emitted)
    assert stats["unclosed"] == tally["unclosed"]
    assert stats["duplicate"] == tally["conflicting"]
    assert stats["older"] > 0.2 * N_KLINES / 5  # redeliveries and late klines


def test_streaming_is_exact_on_the_whole_month_without_gaps(minute_bars: pd.DataFrame) -> None:
    """Drift: 44,640 bars through one window; the end of the month is as exact as its start."""
    bars = mf.bars_from_klines(pd.read_csv(market_data(MINUTE)))
    window = mf.IncrementalFeatures()
    rows = bars[["open", "high", "low", "close", "volume", "trades"]].to_numpy(float).tolist()
    out = [window.push(*row) for row in rows]
    first = window.size - 1
    assert out[first - 1] is None and all(o is not None for o in out[first:])
    streamed = np.array(out[first:])
    exact = exact_features(bars)[window.names].to_numpy(float)[first:]
    assert_close(streamed, exact, EXACT_TOL, "month vs exact")
    tail = slice(-5000, None)
    assert_close(streamed[tail], exact[tail], EXACT_TOL, "last 5000 bars vs exact")


def test_batch_features_are_those_of_1_1(hourly_bars: pd.DataFrame, minute_bars: pd.DataFrame):
    for bars, kw in (
        (hourly_bars, {}),
        (hourly_bars.iloc[-5000:], {"windows": "6,24", "label": "return", "horizon": 3}),
        (minute_bars, {"rsi_window": 9, "threshold": 0.001, "dropna": False}),
    ):
        pd.testing.assert_frame_equal(
            mf.compute_features(bars, **kw), mf11.compute_features(bars, **kw), check_exact=True
        )


def test_batch_gap_rule_on_the_hourly_history(hourly_bars: pd.DataFrame) -> None:
    """The hourly file has exchange outages: with interval, no row's look-back or label spans
    one, and only such rows go."""
    ts = mf.timestamps_ms(hourly_bars["timestamp"])
    assert (np.diff(ts) != 3_600_000).sum() > 5  # the real data has gaps
    frame = mf.compute_features(hourly_bars, interval="1h", horizon=2)
    assert frame.equals(mf.compute_features(hourly_bars, interval="auto", horizon=2))
    plain = mf.compute_features(hourly_bars, horizon=2)
    pos = np.searchsorted(ts, mf.timestamps_ms(frame["timestamp"]))
    # every kept row: the 72 bars before it and the 2 after it are consecutive hours
    assert (ts[pos] - ts[pos - 72] == 72 * 3_600_000).all()
    assert (ts[pos + 2] - ts[pos] == 2 * 3_600_000).all()
    dropped = set(plain["timestamp"]) - set(frame["timestamp"])
    assert set(frame["timestamp"]) <= set(plain["timestamp"]) and len(dropped) > 5 * 70
    for stamp in list(dropped)[:50]:
        p = int(np.searchsorted(ts, mf.timestamps_ms(pd.Series([stamp]))[0]))
        spans = ts[p] - ts[max(p - 72, 0)] != 72 * 3_600_000 or ts[p + 2] - ts[p] != 7_200_000
        assert spans
    kept = plain.set_index("timestamp").loc[frame["timestamp"]].reset_index()
    pd.testing.assert_frame_equal(frame, kept, check_exact=True)


def test_no_leakage_on_real_minutes(minute_bars: pd.DataFrame) -> None:
    bars = minute_bars.iloc[:6000].reset_index(drop=True)
    cut = 4000
    changed = bars.astype({"trades": "float64"})
    factor = np.random.default_rng(3).uniform(0.5, 1.5, size=len(bars) - cut - 1)
    for col in ("open", "high", "low", "close", "volume", "trades"):
        changed.loc[cut + 1 :, col] = changed.loc[cut + 1 :, col].to_numpy() * factor
    changed["high"] = changed[["open", "high", "close"]].max(axis=1)
    changed["low"] = changed[["open", "low", "close"]].min(axis=1)
    t_cut = bars["timestamp"][cut]
    for interval in (None, "1m"):
        base = mf.compute_features(bars, label="return", horizon=5, interval=interval)
        other = mf.compute_features(changed, label="return", horizon=5, interval=interval)
        cols = mf.feature_columns(base)
        past = base[base["timestamp"] <= t_cut].set_index("timestamp")
        past_other = other[other["timestamp"] <= t_cut].set_index("timestamp")
        assert len(past) > 3800
        pd.testing.assert_frame_equal(past[cols], past_other[cols], check_exact=True)
        # labels look strictly ahead: unchanged up to cut-5, changed from there on
        lab, lab_other = past["future_return"], past_other["future_return"]
        assert (lab.iloc[:-5] == lab_other.iloc[:-5]).all()
        assert (lab.iloc[-5:] != lab_other.iloc[-5:]).all()
        # the label at t is the return from t to t+5, never anything at or before t only
        close = bars.set_index("timestamp")["close"]
        nxt = close.shift(-5).loc[past.index]
        np.testing.assert_allclose(lab, nxt / close.loc[past.index] - 1, rtol=1e-15)
        assert not set(cols) & {"label", "future_return"}

    def stream(frame: pd.DataFrame) -> dict[int, list[float]]:
        window = mf.IncrementalFeatures()
        rows = frame[["open", "high", "low", "close", "volume", "trades"]].to_numpy(float)
        outs = {int(ts): window.push(*r) for ts, r in zip(frame["timestamp"], rows.tolist())}
        return {ts: o for ts, o in outs.items() if o is not None}

    s_base, s_other = stream(bars), stream(changed)
    past_keys = [ts for ts in s_base if ts <= t_cut]
    assert len(past_keys) > 3900
    assert all(s_base[ts] == s_other[ts] for ts in past_keys)
    assert any(s_base[ts] != s_other[ts] for ts in s_base if ts > t_cut)


def test_several_symbols_keep_their_own_state(
    monkeypatch: pytest.MonkeyPatch, minute_bars: pd.DataFrame
) -> None:
    ctx = started(monkeypatch, FEATURE_WINDOWS="6,24")
    a = minute_bars.iloc[:400].reset_index(drop=True)
    b = minute_bars.iloc[6_000:6_400].reset_index(drop=True)
    got: dict[str, list[dict[str, Any]]] = {"BTCUSDT": [], "ETHUSDT": []}
    for ra, rb in zip(a.itertuples(), b.itertuples(), strict=True):
        for sym, r in (("BTCUSDT", ra), ("ETHUSDT", rb)):
            k = {"t": r.timestamp, "T": r.timestamp + 59_999, "s": sym, "i": "1m", "o": r.open,
                 "h": r.high, "l": r.low, "c": r.close, "v": r.volume, "n": r.trades, "x": True}  # fmt: skip
            out = mf.handler(ctx, Event({"e": "kline", "s": sym, "k": k}))
            if out is not None:
                got[sym].append(out)
    for sym, bars in (("BTCUSDT", a), ("ETHUSDT", b)):
        batch = mf.compute_features(bars, windows="6,24", label=None)
        cols = mf.feature_columns(batch)
        assert [o["open_time"] for o in got[sym]] == batch["timestamp"].tolist()
        streamed = np.array([[o["features"][c] for c in cols] for o in got[sym]])
        assert_close(streamed, batch[cols].to_numpy(float), BATCH_TOL, sym)


def test_bad_input_is_a_400_over_http_and_raises_from_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = started(monkeypatch)
    good = {"t": 1704067200000, "T": 1704067259999, "s": "BTCUSDT", "i": "1m", "o": "42283.58",
            "h": "42298.62", "l": "42261.02", "c": "42298.61", "v": "35.9", "n": 1327, "x": True}  # fmt: skip
    cases = {
        b"{not json": "not a kline: Expecting property name",
        json.dumps({"e": "kline", "k": {**good, "x": None}}).encode(): "k.x (closed) must be",
        json.dumps({"k": {k: v for k, v in good.items() if k != "x"}}).encode(): "lacks k.x",
        json.dumps({"k": {**good, "c": "abc"}}).encode(): "could not convert",
        json.dumps({"k": {**good, "v": "-1"}}).encode(): "k.v must be >= 0",
        json.dumps({"k": {**good, "o": 0}}).encode(): "k.o must be positive",
        json.dumps({"k": {**good, "i": "1 fortnight"}}).encode(): "bar interval",
        json.dumps("hello").encode(): "expected a Binance kline event",
        json.dumps({"open": 1.0}).encode(): "a bar needs timestamp",
        json.dumps([1, 2, 3]).encode(): "at least 9 fields",
    }
    for body, reason in cases.items():
        status, reply = mf.handler(ctx, Event(body))
        assert status == 400 and reason in reply["error"], (body, reply)
        with pytest.raises(ValueError, match="not a kline"):
            mf.handler(ctx, Event(body, kind="kafka-cluster"))
    assert mf.handler(ctx, Event({"e": "kline", "k": good})) is None  # warming up
    status, reply = mf.handler(ctx, Event({"k": {**good, "t": good["t"] + 60_000, "i": "5m"}}))
    assert status == 400 and "300000 ms kline on a 60000 ms stream" in reply["error"]
    # a plain bar dict needs an interval (it carries none) unless BAR_INTERVAL gives one
    bar = {"timestamp": "2024-01-01 00:00:00+00:00", "open": 1.0, "high": 2.0, "low": 0.5,
           "close": 1.5, "volume": 3.0, "trades": 4, "symbol": "X"}  # fmt: skip
    status, reply = mf.handler(ctx, Event(bar))
    assert status == 400 and "BAR_INTERVAL" in reply["error"]
    assert mf.handler(ctx, Event(b"", method="GET"))["rejected"] == 2 * len(cases) + 2
    ctx = started(monkeypatch, BAR_INTERVAL="1h")
    assert mf.handler(ctx, Event(bar)) is None
    stats = mf.handler(ctx, Event(b"", method="GET"))
    assert stats["rejected"] == 0 and set(stats["symbols"]) == {"X"}
    assert stats["symbols"]["X"]["last_open_time"] == 1704067200000
    assert stats["symbols"]["X"]["interval_ms"] == 3_600_000


def test_featurize_logs_targets_and_time_meta(
    fake_context: Any, frame_item: Any, hourly_bars: pd.DataFrame, klines: pd.DataFrame
) -> None:
    logged: dict[str, dict[str, Any]] = {}
    original = fake_context.log_dataset

    def log_dataset(key: str, df: pd.DataFrame, **kw: Any) -> None:
        logged[key] = kw
        original(key, df, **kw)

    fake_context.log_dataset = log_dataset
    bars = hourly_bars.iloc[-3000:]
    mf.featurize(fake_context, dataset=frame_item(bars), windows="6,24", horizon=3)
    assert logged["features"]["meta"] == {
        "targets": ["label", "future_return"],
        "time_column": "timestamp",
        "label_horizon_bars": 3,
    }
    frame = fake_context.datasets["features"]
    expected = mf11.compute_features(bars, windows="6,24", horizon=3)
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert fake_context.results["rows"] == len(frame)
    # Binance klines go straight in; interval drops the rows a gap would spoil
    mf.featurize(fake_context, dataset=frame_item(klines.drop(index=range(500, 510))),
                 interval="1m", features_key="minutes")  # fmt: skip
    minutes = fake_context.datasets["minutes"]
    assert minutes["timestamp"].dtype == np.int64
    assert fake_context.results["dropped_rows"] == N_KLINES - 10 - len(minutes) == 72 + 73 + 1


def test_feature_window_keeps_1_1s_api(hourly_bars: pd.DataFrame) -> None:
    bars = hourly_bars.iloc[-300:].reset_index(drop=True)
    window = mf.FeatureWindow("6,24,72")
    batch = mf.compute_features(bars, label=None, dropna=False)
    records = bars.to_dict("records")
    outputs = [window.update(row) for row in records]
    assert outputs[window.size - 2] is None and outputs[window.size - 1] is not None
    assert window.update(records[-1]) is None  # the same timestamp again: ignored
    streamed = pd.DataFrame([o for o in outputs if o is not None])
    expected = batch.iloc[-len(streamed) :].reset_index(drop=True)
    assert streamed["timestamp"].tolist() == expected["timestamp"].tolist()
    cols = mf.feature_columns(expected)
    assert_close(streamed[cols].to_numpy(float), expected[cols].to_numpy(float), BATCH_TOL, "1.1")


def test_bars_from_klines_sorts_and_keeps_the_first_of_each_open_time(
    klines: pd.DataFrame,
) -> None:
    raw = klines.iloc[:100]
    twisted = pd.concat([raw.iloc[50:], raw.iloc[:50], raw.iloc[[10]].assign(close=1.0)])
    bars = mf.bars_from_klines(twisted)
    assert list(bars.columns) == ["timestamp", "open", "high", "low", "close", "volume", "trades"]
    assert bars["timestamp"].tolist() == raw["open_time"].tolist()
    assert bars["close"].tolist() == raw["close"].tolist()
    with pytest.raises(ValueError, match="open_time"):
        mf.bars_from_klines(raw.drop(columns="open_time"))


def test_featurize_meta_through_a_tracked_run(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, klines: pd.DataFrame
) -> None:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "klines.csv"
    klines.iloc[:3000].to_csv(path, index=False)
    run = import_function("hub://market_features:1.2").run(
        params={"horizon": 4}, inputs={"dataset": str(path)}, progress=False
    )
    assert run.state == "completed", run.error
    meta = run.artifact_record("features").meta
    assert meta["targets"] == ["label", "future_return"] and meta["label_horizon_bars"] == 4
    assert meta["time_column"] == "timestamp" and meta["rows"] == run.results["rows"]


def _events(bars: pd.DataFrame, symbol: str = "BTCUSDT") -> list[dict[str, Any]]:
    return [
        {"e": "kline", "s": symbol, "k": {"t": r.timestamp, "T": r.timestamp + 59_999, "s": symbol,
         "i": "1m", "o": r.open, "h": r.high, "l": r.low, "c": r.close, "v": r.volume,
         "n": r.trades, "x": True}}
        for r in bars.itertuples()
    ]  # fmt: skip


def test_nan_features_go_out_as_null(monkeypatch: pytest.MonkeyPatch, minute_bars: pd.DataFrame):
    """A feature the batch leaves NaN (volume ratios and z-scores over minutes without volume)
    is None in the handler's output, so the message is strict JSON; Python's window keeps NaN."""
    bars = minute_bars.iloc[:300].reset_index(drop=True)
    bars.loc[150:190, "volume"] = 0.0  # 41 minutes without volume: the 6 and 24-bar windows
    ctx = started(monkeypatch)
    outputs = [mf.handler(ctx, Event(e)) for e in _events(bars)]
    emitted = [o for o in outputs if o is not None]
    window = mf.IncrementalFeatures()
    rows = bars[["open", "high", "low", "close", "volume", "trades"]].to_numpy(float).tolist()
    pushed = [v for v in (window.push(*r) for r in rows) if v is not None]
    assert len(emitted) == len(pushed) == len(bars) - window.size + 1
    nulls = 0
    for out, values in zip(emitted, pushed, strict=True):
        json.dumps(out, allow_nan=False)  # strict JSON: raises on NaN/inf
        for name, value in zip(window.names, values, strict=True):
            got = out["features"][name]
            if math.isnan(value):
                assert got is None, name
                nulls += 1
            else:
                assert got == value, name
    batch = mf.compute_features(bars, label=None, dropna=False).iloc[window.size - 1 :]
    cols = mf.feature_columns(batch)
    is_null = np.array([[o["features"][c] is None for c in cols] for o in emitted])
    np.testing.assert_array_equal(is_null, batch[cols].isna().to_numpy())
    assert nulls > 100 and {c for c in cols if batch[c].isna().any()} == {
        f"volume_{kind}_{w}" for kind in ("ratio", "z") for w in (6, 24)
    }


def _item_files(folder: Path, target: Path) -> Path:
    """The files a private hub's cache or an exported function holds: item.yaml and the code
    files item.yaml lists, nothing else (no __init__.py)."""
    fn = import_function("hub://market_features:1.2")
    target.mkdir(parents=True)
    for name in ("item.yaml", *fn.spec.code_files):
        shutil.copy(folder / name, target / name)
    return target


def test_the_item_imports_its_files_from_a_copy_outside_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, klines: pd.DataFrame
) -> None:
    """A cached or private copy is imported by path, not as a package, and a deployed function's
    handler module is top-level: batch.py, incremental.py and klines.py (which import each other)
    still load, from beside market_features.py, and give the bundled module's results."""
    bundled = import_function("hub://market_features:1.2").folder
    copy = _item_files(bundled, tmp_path / "hub" / "market_features" / "1.2.0")
    exported = import_function("hub://market_features:1.2").export(tmp_path / "fn")
    assert {p.name for p in exported.glob("*.py")} == {p.name for p in copy.glob("*.py")}
    modules = [
        Hub([tmp_path / "hub"], bundled=False).import_function("hub://market_features:1.2.0").module(),
        import_file(exported / "market_features.py", "market_features_exported_test"),
    ]  # fmt: skip
    bars = mf.bars_from_klines(klines.iloc[:400])
    expected = mf.compute_features(bars, interval="1m")
    ctx = started(monkeypatch)
    want = [mf.handler(ctx, Event(e)) for e in _events(bars)]
    for module, folder in zip(modules, (copy, exported), strict=True):
        assert not module.__name__.startswith(("tickrun.hub.items", "hub.items"))
        for sibling in (module.batch, module.incremental, module.klines):
            assert Path(sibling.__file__).parent == folder.resolve()
        # the files' imports of each other resolve in the copy, not in the bundled package
        assert module.klines.IncrementalFeatures is module.IncrementalFeatures
        assert module.IncrementalFeatures is not mf.IncrementalFeatures
        for name in ("compute_features", "feature_columns", "bars_from_klines", "FeatureWindow",
                     "handler", "init_context", "featurize", "lookback", "parse_windows"):  # fmt: skip
            assert getattr(module, name).__module__.startswith(module.__name__), name
        pd.testing.assert_frame_equal(module.compute_features(bars, interval="1m"), expected)
        ctx = type("Ctx", (), {})()
        ctx.user_data = type("UserData", (), {})()
        ctx.logger = started(monkeypatch).logger
        module.init_context(ctx)
        got = [module.handler(ctx, Event(e)) for e in _events(bars)]
        assert got == want and sum(o is not None for o in got) == len(bars) - 72
