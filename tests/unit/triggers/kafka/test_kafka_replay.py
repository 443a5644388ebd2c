"""triggers/kafka/replay.py: the shipped minute file as Binance websocket klines, paced by
speed, rate or not at all, with partial updates and redeliveries (no broker: a list sender and
a fake clock)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tickrun.functions.errors import SpecError
from tickrun.hub.sampledata import MINUTE, market_data
from tickrun.triggers.kafka.replay import (
    REPLAY_TS_HEADER,
    Pacer,
    Schedule,
    kline_event,
    messages,
    read_klines,
    replay,
)

FILE = market_data(MINUTE)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def _sent() -> tuple[list[tuple[bytes, dict[str, object], dict[str, bytes]]], object]:
    out: list[tuple[bytes, dict[str, object], dict[str, bytes]]] = []

    def send(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        out.append((key, json.loads(value), dict(headers)))

    return out, send


def test_closed_klines_carry_the_files_values_in_binance_form() -> None:
    frame = pd.read_csv(FILE, nrows=50)
    klines = list(read_klines(FILE, limit=50))
    assert len(klines) == 50
    for row, kline in zip(frame.itertuples(), klines, strict=True):
        event = kline_event(kline)
        k = event["k"]
        assert event["e"] == "kline" and event["s"] == "BTCUSDT" == k["s"]
        assert k["t"] == row.open_time and k["T"] == row.close_time and k["i"] == "1m"
        assert event["E"] == row.close_time + 1
        assert k["x"] is True and k["n"] == row.trades
        for key, col in (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close")):
            assert isinstance(k[key], str)  # Binance sends decimal strings
            assert float(k[key]) == getattr(row, col)
        assert float(k["v"]) == pytest.approx(row.volume)
        assert float(k["q"]) == pytest.approx(row.quote_volume)


def test_offset_limit_and_a_symbol_column(tmp_path: Path) -> None:
    frame = pd.read_csv(FILE, nrows=30)
    assert [k.open_time for k in read_klines(FILE, offset=10, limit=5)] == list(
        frame["open_time"].iloc[10:15]
    )
    frame.insert(0, "symbol", ["ETHUSDT"] * 30)
    path = tmp_path / "eth.csv.gz"
    with gzip.open(path, "wt") as fh:
        frame.drop(columns=["close_time"]).to_csv(fh, index=False)
    klines = list(read_klines(path))
    assert {k.symbol for k in klines} == {"ETHUSDT"}
    assert klines[0].close_time == frame["open_time"].iloc[0] + 59_999  # Binance's definition


def test_a_file_that_is_not_klines_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SpecError, match="missing column"):
        list(read_klines(bad))
    worse = tmp_path / "y.csv"
    worse.write_text("open_time,open,high,low,close,volume\n1,2,3,1,x,5\n")
    with pytest.raises(SpecError, match="row 1"):
        list(read_klines(worse))


def test_partial_updates_precede_each_closed_kline_inside_its_range() -> None:
    klines = list(read_klines(FILE, limit=200))
    msgs = list(messages(klines, partial_updates=3))
    assert len(msgs) == 200 * 4
    for i, kline in enumerate(klines):
        group = msgs[i * 4 : i * 4 + 4]
        assert [m.closed for m in group] == [False, False, False, True]
        assert all(m.event["k"]["t"] == kline.open_time for m in group)
        stamps = [m.event["E"] for m in group]
        assert stamps == sorted(stamps) and len(set(stamps)) == 4  # event time moves on
        lo, hi = float(kline.low), float(kline.high)
        for m in group[:3]:
            k = m.event["k"]
            assert k["x"] is False
            low, high, close = float(k["l"]), float(k["h"]), float(k["c"])
            assert low <= close <= high and low <= float(k["o"]) <= high
            assert lo - 1e-9 <= low and high <= hi + 1e-9
            assert float(k["v"]) < float(kline.volume) or float(kline.volume) == 0
        assert group[3].event == kline_event(kline)


def test_redeliveries_resend_the_previous_closed_kline() -> None:
    klines = list(read_klines(FILE, limit=20))
    msgs = list(messages(klines, redeliver_every=5))
    again = [m for m in msgs if m.redelivery]
    assert len(again) == 4
    for m in again:
        i = msgs.index(m)
        assert msgs[i - 1].closed and m.event["k"]["t"] < msgs[i - 1].event["k"]["t"]
        assert m.event == kline_event(klines[m.bar])


def test_speed_paces_by_event_time() -> None:
    clock = FakeClock()
    out, send = _sent()
    klines = list(read_klines(FILE, limit=10))
    stats = replay(
        klines,
        send,  # type: ignore[arg-type]
        schedule=Schedule(speed=60.0),
        partial_updates=1,
        pacer=Pacer(clock, clock.sleep),
        wall_clock=clock,
    )
    # One minute bars at 60x: a bar per second; the last closed kline is due 9 s after the
    # first (the first record, bar 0's half-way update, is due at once).
    first_closed_ms = klines[0].close_time + 1
    first_ms = klines[0].open_time
    assert clock.now - 100.0 == pytest.approx((first_closed_ms - first_ms) / 1000 / 60 + 9)
    assert stats.klines == 10 and stats.partials == 10 and stats.messages == 20
    stamps = [float(h[REPLAY_TS_HEADER]) for _k, _v, h in out]
    assert stamps == sorted(stamps)
    gaps = {round(b - a, 6) for a, b in zip(stamps[1::2], stamps[3::2], strict=False)}
    assert gaps == {1.0}  # closed klines one second apart
    assert {k for k, _v, _h in out} == {b"BTCUSDT"}


def test_rate_paces_by_bar_and_max_never_sleeps() -> None:
    klines = list(read_klines(FILE, limit=50))
    clock = FakeClock()
    replay(
        klines,
        _sent()[1],  # type: ignore[arg-type]
        schedule=Schedule(rate=25.0),
        partial_updates=4,
        pacer=Pacer(clock, clock.sleep),
    )
    assert clock.now - 100.0 == pytest.approx(50 / 25.0)
    fast = FakeClock()
    stats = replay(klines, _sent()[1], pacer=Pacer(fast, fast.sleep))  # type: ignore[arg-type]
    assert fast.slept == [] and stats.klines == 50


def test_a_schedule_needs_one_positive_pace() -> None:
    with pytest.raises(SpecError):
        Schedule(speed=1.0, rate=1.0)
    with pytest.raises(SpecError):
        Schedule(rate=0.0)


def test_the_cli_verb_is_registered() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tickrun", "kafka", "replay", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--partial-updates" in out.stdout and "--speed" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "tickrun", "kafka", "replay", str(FILE), "--topic", "t", "--max"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TICKRUN_KAFKA_BROKERS"},
    )
    assert bad.returncode == 2 and "--brokers" in bad.stderr
