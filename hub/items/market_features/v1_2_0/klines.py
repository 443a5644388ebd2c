"""market_features 1.2.0, klines: Binance kline events (websocket, REST array, or a bar dict) →
closed, ordered, deduplicated bars per symbol, with the gap state (:class:`KlineStream`), and
the per-symbol streams a topic carries (:class:`FeatureStreams`). The rules are the item's
(``market_features.py``'s docstring)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .batch import OHLCV, interval_ms, parse_windows
from .incremental import IncrementalFeatures

logger = logging.getLogger(__name__)

_PRICE_FIELDS = (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close"))


def _number(value: Any, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} must be a number or a numeric string, got {value!r}")
    x = float(value)
    if not math.isfinite(x) or (x <= 0 if positive else x < 0):
        raise ValueError(f"{name} must be {'positive' if positive else '>= 0'}, got {value!r}")
    return x


def _open_time(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be ms since the epoch, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:  # an ISO time, as in the hourly CSV
            stamp = pd.Timestamp(text)
        except ValueError:
            pass
        else:
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
            return int(stamp.value // 1_000_000)
    raise ValueError(f"{name} must be ms since the epoch (or an ISO time), got {value!r}")


Kline = tuple[str, int, int | None, bool, float, float, float, float, float, float]
"""symbol, open time (ms), interval (ms, if the event says), closed, o, h, l, c, v, trades."""


def parse_kline(body: Any) -> Kline:
    """One kline from Binance's websocket event (``{"k": {...}}``, also inside a combined
    stream's ``{"data": ...}``), its REST array, or a dict with open_time/timestamp, OHLCV and
    trades (closed unless ``closed`` says otherwise). ValueError says what is wrong."""
    if isinstance(body, Mapping) and isinstance(body.get("data"), Mapping):
        body = body["data"]
    if isinstance(body, Mapping) and isinstance(body.get("k"), Mapping):
        k = body["k"]
        missing = [f for f in ("t", "o", "h", "l", "c", "v", "n", "x") if f not in k]
        if missing:
            raise ValueError(f"kline lacks k.{', k.'.join(missing)}")
        if not isinstance(k["x"], bool):
            raise ValueError(f"k.x (closed) must be true or false, got {k['x']!r}")
        t = _open_time(k["t"], "k.t")
        if "i" in k:
            step: int | None = interval_ms(k["i"])
        elif "T" in k:
            step = _open_time(k["T"], "k.T") - t + 1
        else:
            step = None
        symbol = k.get("s") or body.get("s") or ""
        o, h, lo, c = (_number(k[f], f"k.{f}", positive=True) for f, _ in _PRICE_FIELDS)
        v = _number(k["v"], "k.v", positive=False)
        return str(symbol), t, step, k["x"], o, h, lo, c, v, _number(k["n"], "k.n", positive=False)
    if isinstance(body, list | tuple):
        if len(body) < 9:
            raise ValueError("a REST kline array has at least 9 fields (open time … trades)")
        t = _open_time(body[0], "open time")
        o, h, lo, c = (
            _number(body[j], name, positive=True)
            for j, (_, name) in enumerate(_PRICE_FIELDS, start=1)
        )
        v = _number(body[5], "volume", positive=False)
        step = _open_time(body[6], "close time") - t + 1
        return "", t, step, True, o, h, lo, c, v, _number(body[8], "trades", positive=False)
    if isinstance(body, Mapping):
        time_key = "open_time" if "open_time" in body else "timestamp"
        missing = [f for f in (time_key, *OHLCV, "trades") if f not in body]
        if missing:
            raise ValueError(f"a bar needs {', '.join(missing)} (or send a Binance kline event)")
        closed = body.get("closed", True)
        if not isinstance(closed, bool):
            raise ValueError(f"closed must be true or false, got {closed!r}")
        step = interval_ms(body["interval"]) if body.get("interval") is not None else None
        o, h, lo, c = (_number(body[f], f, positive=True) for _, f in _PRICE_FIELDS)
        v = _number(body["volume"], "volume", positive=False)
        t = _open_time(body[time_key], time_key)
        trades = _number(body["trades"], "trades", positive=False)
        return str(body.get("symbol") or ""), t, step, closed, o, h, lo, c, v, trades
    raise ValueError(
        f"expected a Binance kline event, REST kline array or bar dict, not {body!r:.80}"
    )


class KlineStream:
    """One symbol's klines → features of each new closed bar (the rules in the module doc)."""

    def __init__(
        self, symbol: str, window: IncrementalFeatures, interval: int | None = None
    ) -> None:
        self.symbol = symbol
        self.window = window
        self.interval = interval
        self.last_open_time: int | None = None
        self.pending_gap: dict[str, int] | None = None
        self.counts = dict.fromkeys(
            ("unclosed", "duplicate", "older", "accepted", "gaps", "emitted"), 0
        )

    def offer(self, kline: Kline) -> dict[str, Any] | None:
        _, t, step, closed, o, h, lo, c, v, n = kline
        counts = self.counts
        if step is not None and self.interval is not None and step != self.interval:
            raise ValueError(
                f"{self.symbol or 'stream'}: a {step} ms kline on a {self.interval} ms stream"
            )
        if not closed:
            counts["unclosed"] += 1
            return None
        last = self.last_open_time
        if last is not None and t <= last:
            counts["duplicate" if t == last else "older"] += 1
            return None
        interval = self.interval or step
        if interval is None:
            raise ValueError("bar interval unknown: send k.i (or k.T), or set BAR_INTERVAL")
        self.interval = interval
        if last is not None and t != last + interval:
            counts["gaps"] += 1
            gaps = self.pending_gap["gaps"] + 1 if self.pending_gap else 1
            self.pending_gap = {
                "previous_open_time": last,
                "open_time": t,
                "missing_bars": (t - last) // interval - 1,
                "gaps": gaps,
            }
            logger.warning(
                "%s: gap after open time %d (next %d, %d bar(s) missing): window restarts",
                self.symbol or "stream",
                last,
                t,
                self.pending_gap["missing_bars"],
            )
            self.window.reset()
        self.last_open_time = t
        counts["accepted"] += 1
        values = self.window.push(o, h, lo, c, v, n)
        if values is None:
            return None
        counts["emitted"] += 1
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "open_time": t,
            "close": c,
            "features": dict(zip(self.window.names, values, strict=True)),
        }
        if self.pending_gap is not None:
            out["gap"], self.pending_gap = self.pending_gap, None
        return out

    def stats(self) -> dict[str, Any]:
        return {
            **self.counts,
            "interval_ms": self.interval,
            "last_open_time": self.last_open_time,
            "bars_in_window": min(self.window.count, self.window.size),
            "needed": self.window.size,
        }


class FeatureStreams:
    """Per-symbol :class:`KlineStream` s (a topic may carry several symbols)."""

    def __init__(
        self,
        windows: Any = None,
        rsi_window: int = 14,
        mfi_window: int = 14,
        interval: Any = None,
    ) -> None:
        self.windows = parse_windows(windows)
        self.rsi_window, self.mfi_window = int(rsi_window), int(mfi_window)
        self.interval = interval_ms(interval) if interval not in (None, "") else None
        IncrementalFeatures(self.windows, self.rsi_window, self.mfi_window)  # validate now
        self.streams: dict[str, KlineStream] = {}
        self.rejected = 0
        self.new_gap: dict[str, Any] | None = None

    def offer(self, body: Any) -> dict[str, Any] | None:
        """The features of the new closed bar ``body`` makes, or None; :attr:`new_gap` is the
        gap this kline revealed (None if it revealed none). ValueError for bad input."""
        self.new_gap = None
        try:
            if isinstance(body, bytes | bytearray | str):  # JSON the trigger did not decode
                body = json.loads(body)
            kline = parse_kline(body)
            stream = self.streams.get(kline[0])
            if stream is None:
                window = IncrementalFeatures(self.windows, self.rsi_window, self.mfi_window)
                stream = KlineStream(kline[0], window, self.interval)
            gaps = stream.counts["gaps"]
            out = stream.offer(kline)
        except (ValueError, RecursionError):
            self.rejected += 1
            raise
        self.streams.setdefault(kline[0], stream)
        if stream.counts["gaps"] != gaps:
            self.new_gap = {"symbol": stream.symbol, **(stream.pending_gap or {})}
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "rejected": self.rejected,
            "symbols": {s: k.stats() for s, k in self.streams.items()},
        }
