"""market_features 1.2.0 — OHLCV bars → causal features and a forward label; batch and streaming.

Batch (:func:`compute_features`, the ``featurize`` job): the same numbers as 1.1 (same code
path); the job also logs the dataset's ``meta`` (targets, time column, label horizon) so a
trainer drops the targets and purges its splits. Every feature at bar t uses bars ≤ t only,
with a finite look-back (:func:`lookback`); only ``label``/``future_return`` look forward.

Streaming (the Nuclio ``handler``, fed Binance kline events; :class:`KlineStream` per symbol
over an :class:`IncrementalFeatures` window):

- **Closed bars only.** A kline with ``k.x`` false (an intra-bar update) returns None and never
  enters the window.
- **One bar per open time, in order.** A closed kline whose open time is not after the last
  accepted one of its symbol (a redelivery, or an older kline arriving late) returns None; the
  first closed kline of an open time wins.
- **Gaps restart the window.** When a closed kline's open time is not exactly one interval after
  the last accepted one (bars missing), the gap is logged, counted, and the symbol's window
  restarts at that bar: no output until it holds :func:`lookback` bars again, and the first
  output after that carries ``"gap"``. A window never spans a gap. The batch counterpart is
  ``compute_features(..., interval=...)`` (``featurize`` parameter ``interval``): features whose
  look-back spans a gap, and labels whose horizon does, are NaN (dropped with ``dropna``), so
  its rows are the bars the stream emits. Without ``interval`` (the default, as in 1.1) rows
  are taken as consecutive bars; every row the stream emits still equals that row.
- **Equal to batch within a stated tolerance, not bit-identical.** For every emitted bar each
  feature ``a`` and the batch value ``b`` at that open time satisfy
  ``|a - b| <= 1e-8 * max(1, |b|)``, and ``a`` is within ``1e-12 * max(1, |x|)`` of ``x``, the
  exact two-pass value (both tested on the January 2024 minute klines replayed with partial
  updates, redeliveries, late klines and gaps). The batch side is the looser one: pandas'
  sliding variance drifts (2.2e-9 on ``volume_z_6`` there), the stream's sums do not.
- **O(1) per bar.** Running sums over ring buffers (no pandas); each window's sums are re-summed
  exactly (``math.fsum``) every ``w`` bars, so rounding drift is bounded by ~2w additions
  however long the stream runs; a window of equal values gives the exact mean and a zero
  deviation, as pandas does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

OHLCV = ("open", "high", "low", "close", "volume")
DEFAULT_WINDOWS = (6, 24, 72)
TARGET_COLUMNS = ("label", "future_return")
NAN = float("nan")
_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_windows(windows: Any) -> tuple[int, ...]:
    if windows is None:
        return DEFAULT_WINDOWS
    if isinstance(windows, str):
        items: Iterable[Any] = [w for w in windows.replace(";", ",").split(",") if w.strip()]
    elif isinstance(windows, int):
        items = [windows]
    else:
        items = windows
    out = tuple(sorted({int(w) for w in items}))
    if not out or out[0] < 2:
        raise ValueError(f"windows must be integers >= 2, got {windows!r}")
    return out


def lookback(windows: Any = None, rsi_window: int = 14, mfi_window: int = 14) -> int:
    """Bars a streaming caller must keep so the newest bar's features are complete."""
    return max(*parse_windows(windows), rsi_window, mfi_window) + 1


def interval_ms(value: Any) -> int:
    """A bar interval in ms: ``"1m"``, ``"4h"``, ``"1d"``, ``"30s"`` (Binance's names) or ms."""
    if isinstance(value, str):
        text = value.strip()
        match = re.fullmatch(r"(\d+)([smhdw])", text)
        if match:
            ms = int(match[1]) * _UNITS[match[2]]
        elif text.isdigit():
            ms = int(text)
        else:
            raise ValueError(f"bar interval {value!r}: e.g. 1m, 15m, 1h, 1d or milliseconds")
    elif isinstance(value, int | float) and not isinstance(value, bool) and value == int(value):
        ms = int(value)
    else:
        raise ValueError(f"bar interval {value!r}: e.g. 1m, 15m, 1h, 1d or milliseconds")
    if ms <= 0:
        raise ValueError(f"bar interval must be positive, got {value!r}")
    return ms


# --- batch -----------------------------------------------------------------------------------


def _rsi(close: pd.Series, window: int) -> pd.Series:
    delta = close.diff()
    gain = delta.clip(lower=0).rolling(window).mean()
    loss = (-delta.clip(upper=0)).rolling(window).mean()
    total = gain + loss
    # A flat window (no moves at all) is neutral, not undefined.
    # Rolling sums carry rounding (a window of only gains can give 100.0000001): clip.
    rsi = (100.0 * gain / total.where(total > 0)).clip(0.0, 100.0)
    return rsi.where(total > 0, 50.0).where(total.notna())


def _mfi(df: pd.DataFrame, window: int) -> pd.Series:
    typical = (df["high"] + df["low"] + df["close"]) / 3.0
    flow = typical * df["volume"]
    move = typical.diff()
    positive = flow.where(move > 0, 0.0).rolling(window).sum()
    negative = flow.where(move < 0, 0.0).rolling(window).sum()
    total = positive + negative
    mfi = (100.0 * positive / total.where(total > 0)).clip(0.0, 100.0)
    return mfi.where(total > 0, 50.0).where(total.notna() & move.rolling(window).count().eq(window))


def timestamps_ms(ts: pd.Series) -> np.ndarray:
    """A timestamp column as int ms since the epoch: numbers are taken as ms already (Binance
    open times), anything else is parsed as dates (naive ones as UTC)."""
    if pd.api.types.is_numeric_dtype(ts):
        return ts.to_numpy(dtype="int64")
    dates = pd.to_datetime(ts, utc=True)
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy("int64")


def gap_masks(ts_ms: np.ndarray, step_ms: int, steps: int, horizon: int) -> tuple[Any, Any]:
    """(features_broken, label_broken): row t's look-back of ``steps`` bar steps, or its label's
    ``horizon`` steps ahead, contains a step other than exactly ``step_ms``."""
    broken = np.zeros(len(ts_ms), dtype=bool)
    broken[1:] = np.diff(ts_ms) != step_ms  # the step into row t is a gap (or out of order)
    count = np.cumsum(broken)
    before = np.concatenate([np.zeros(min(steps, len(count)), dtype=count.dtype), count])
    features_bad = count - before[: len(count)] > 0
    ahead = np.concatenate([count[horizon:], np.full(min(horizon, len(count)), count[-1:])])
    label_bad = ahead[: len(count)] - count > 0 if len(count) else broken
    return features_bad, label_bad


def compute_features(
    bars: pd.DataFrame,
    *,
    windows: Any = None,
    rsi_window: int = 14,
    mfi_window: int = 14,
    label: str | None = "updown",
    horizon: int = 1,
    threshold: float = 0.0,
    dropna: bool = True,
    interval: Any = None,
) -> pd.DataFrame:
    """Feature frame for ``bars`` (columns open, high, low, close, volume; optional timestamp,
    trades). ``label``: ``"updown"`` (1 if the return over the next ``horizon`` bars is above
    ``threshold``), ``"return"`` (that return) or None (no target: the streaming case).

    ``interval`` (e.g. ``"1m"``, ``"1h"``, ms, or ``"auto"``: the commonest step; needs a
    ``timestamp`` column): features whose look-back spans a step other than one interval, and
    labels whose horizon does, become NaN — the streaming handler's gap rule. None (default):
    rows are consecutive bars, as in 1.1."""
    missing = [c for c in OHLCV if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {', '.join(missing)}; have {list(bars.columns)}")
    if label not in ("updown", "return", None):
        raise ValueError(f"label must be 'updown', 'return' or None, not {label!r}")
    if horizon < 1:
        raise ValueError("horizon must be >= 1 bar")
    wins = parse_windows(windows)
    df = bars.reset_index(drop=True)
    features_bad = label_bad = None
    if interval is not None and interval != "":
        if "timestamp" not in df.columns:
            raise ValueError("interval (gap handling) needs a timestamp column")
        ts = timestamps_ms(df["timestamp"])
        if interval == "auto":
            steps = pd.Series(np.diff(ts))
            steps = steps[steps > 0]
            if steps.empty:
                raise ValueError("interval='auto' needs at least two increasing timestamps")
            step = int(steps.mode().iloc[0])
        else:
            step = interval_ms(interval)
        look = lookback(wins, rsi_window, mfi_window) - 1
        features_bad, label_bad = gap_masks(ts, step, look, horizon)
    close = df["close"].astype(float)
    volume = df["volume"].astype(float)
    log_ret = np.log(close).diff()
    out: dict[str, pd.Series] = {}
    if "timestamp" in df.columns:
        out["timestamp"] = df["timestamp"]
    out["ret_1"] = close.pct_change()
    out["log_ret_1"] = log_ret
    out["hl_range"] = (df["high"] - df["low"]) / close
    out["body"] = (close - df["open"]) / df["open"]
    for w in wins:
        out[f"ret_{w}"] = close / close.shift(w) - 1.0
        sma = close.rolling(w).mean()
        out[f"sma_ratio_{w}"] = close / sma - 1.0
        out[f"volatility_{w}"] = log_ret.rolling(w).std()
        vmean = volume.rolling(w).mean()
        vstd = volume.rolling(w).std()
        out[f"volume_ratio_{w}"] = volume / vmean.where(vmean > 0)
        out[f"volume_z_{w}"] = (volume - vmean) / vstd.where(vstd > 0)
        out[f"range_mean_{w}"] = out["hl_range"].rolling(w).mean()
        if "trades" in df.columns:
            trades = df["trades"].astype(float)
            tmean = trades.rolling(w).mean()
            out[f"trades_ratio_{w}"] = trades / tmean.where(tmean > 0)
    out[f"rsi_{rsi_window}"] = _rsi(close, rsi_window)
    out[f"mfi_{mfi_window}"] = _mfi(df, mfi_window)
    frame = pd.DataFrame(out)
    if label is not None:
        future = close.shift(-horizon) / close - 1.0
        if label_bad is not None:
            future = future.where(~label_bad)
        frame["future_return"] = future
        if label == "updown":
            frame["label"] = (future > threshold).astype("int64").where(future.notna())
        else:
            frame["label"] = future
    features = [c for c in frame.columns if c not in ("timestamp", *TARGET_COLUMNS)]
    frame[features] = frame[features].replace([np.inf, -np.inf], np.nan)
    if features_bad is not None:
        frame.loc[features_bad, features] = np.nan
    if dropna:
        frame = frame.dropna().reset_index(drop=True)
        if label == "updown":
            frame["label"] = frame["label"].astype("int64")
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("timestamp", *TARGET_COLUMNS)]


def feature_names(
    windows: Any = None, rsi_window: int = 14, mfi_window: int = 14, trades: bool = True
) -> list[str]:
    """The feature columns :func:`compute_features` gives, in its order."""
    names = ["ret_1", "log_ret_1", "hl_range", "body"]
    for w in parse_windows(windows):
        names += [f"ret_{w}", f"sma_ratio_{w}", f"volatility_{w}", f"volume_ratio_{w}"]
        names += [f"volume_z_{w}", f"range_mean_{w}"] + ([f"trades_ratio_{w}"] if trades else [])
    return [*names, f"rsi_{rsi_window}", f"mfi_{mfi_window}"]


def bars_from_klines(klines: pd.DataFrame) -> pd.DataFrame:
    """Binance kline CSV rows (open_time, open, high, low, close, volume, …, trades) → the bars
    :func:`compute_features` takes: timestamp (= open_time, ms), OHLCV, trades; sorted by open
    time, one row per open time (the first, as the stream keeps the first closed kline)."""
    need = ["open_time", *OHLCV]
    missing = [c for c in need if c not in klines.columns]
    if missing:
        raise ValueError(f"not Binance klines: no column(s) {', '.join(missing)}")
    cols = need + (["trades"] if "trades" in klines.columns else [])
    bars = klines[cols].rename(columns={"open_time": "timestamp"})
    bars = bars.astype({c: "float64" for c in OHLCV}).astype({"timestamp": "int64"})
    bars = bars.sort_values("timestamp", kind="stable").drop_duplicates("timestamp")
    return bars.reset_index(drop=True)


# --- streaming: O(1) incremental window -------------------------------------------------------

# Quantities with a same-value run counter (a window of equal values is exact, as in pandas).
_C, _LR, _HL, _V, _T, _G, _L, _P, _N = range(9)
_FROM_BAR_0 = (_C, _HL, _V, _T)


class IncrementalFeatures:
    """Running-sum state for one stream of consecutive closed bars.

    :meth:`push` adds a bar and returns its features (in :attr:`names` order) once
    :attr:`size` bars are in, else None; constant time and memory per bar."""

    def __init__(
        self, windows: Any = None, rsi_window: int = 14, mfi_window: int = 14, trades: bool = True
    ) -> None:
        if int(rsi_window) < 1 or int(mfi_window) < 1:
            raise ValueError("rsi_window and mfi_window must be >= 1")
        self.windows = parse_windows(windows)
        self.rsi_window = int(rsi_window)
        self.mfi_window = int(mfi_window)
        self.trades = trades
        self.size = lookback(self.windows, self.rsi_window, self.mfi_window)
        self.names = feature_names(self.windows, self.rsi_window, self.mfi_window, trades)
        r, m = self.rsi_window, self.mfi_window
        self._osc_spec = ((_G, r, 0), (_L, r, 1), (_P, m, 2), (_N, m, 3))
        self.reset()

    def reset(self) -> None:
        """Forget every bar (after a gap): the window fills again from the next one."""
        n = self.size
        self.count = 0
        # ring buffers of per-bar values, one per quantity, indexed by bar % size
        self._ring = [[0.0] * n for _ in range(9)]
        self._run = [0] * 9
        # per window: sums of close, lr-K, (lr-K)², v-K, (v-K)², hl, trades; shifts K_lr, K_v
        self._sums = [[0.0] * 7 for _ in self.windows]
        self._shift = [[0.0, 0.0] for _ in self.windows]
        self._osc = [0.0] * 4  # sums of gain, loss (RSI window), positive, negative flow (MFI)
        self._log_prev = self._typ_prev = 0.0

    @property
    def ready(self) -> bool:
        return self.count >= self.size

    def push(self, o: float, h: float, lo: float, c: float, v: float, t: float) -> list | None:
        i = self.count
        n = self.size
        slot = i % n
        ring, run = self._ring, self._run
        logc = math.log(c)
        typ = (h + lo + c) / 3.0
        hl = (h - lo) / c
        if i:
            cp = ring[_C][(i - 1) % n]
            ret1 = c / cp - 1.0
            lr = logc - self._log_prev
            delta = c - cp
            gain = delta if delta > 0 else 0.0
            loss = -delta if delta < 0 else 0.0
            move = typ - self._typ_prev
            flow = typ * v
            pos = flow if move > 0 else 0.0
            neg = flow if move < 0 else 0.0
        else:
            ret1 = lr = NAN
            gain = loss = pos = neg = 0.0
        self._log_prev, self._typ_prev = logc, typ
        values = (c, lr if i else 0.0, hl, v, t, gain, loss, pos, neg)
        prev = (i - 1) % n
        for q in range(9):
            r = ring[q]
            x = values[q]
            if i == 0:  # lr, gain, loss and flows have no value at bar 0 (no previous bar)
                run[q] = 1 if q in _FROM_BAR_0 else 0
            elif run[q] and x == r[prev]:
                run[q] += 1
            else:
                run[q] = 1
            r[slot] = x
        lr_x = values[_LR]
        for k, w in enumerate(self.windows):
            s, shift = self._sums[k], self._shift[k]
            klr, kv = shift
            s[0] += c
            s[1] += lr_x - klr
            s[2] += (lr_x - klr) ** 2
            s[3] += v - kv
            s[4] += (v - kv) ** 2
            s[5] += hl
            s[6] += t
            if i >= w:
                j = (i - w) % n
                old_lr, old_v = ring[_LR][j] - klr, ring[_V][j] - kv
                s[0] -= ring[_C][j]
                s[1] -= old_lr
                s[2] -= old_lr * old_lr
                s[3] -= old_v
                s[4] -= old_v * old_v
                s[5] -= ring[_HL][j]
                s[6] -= ring[_T][j]
            if (i + 1) % w == 0:
                self._resum(k, w, i)
        osc = self._osc
        for q, w, idx in self._osc_spec:
            osc[idx] += values[q]
            if i >= w:
                osc[idx] -= ring[q][(i - w) % n]
            if (i + 1) % w == 0:
                osc[idx] = math.fsum(ring[q][(i - m) % n] for m in range(w))
        self.count = i + 1
        if i + 1 < n:
            return None
        out = [ret1, lr, hl, (c - o) / o]
        for k, w in enumerate(self.windows):
            s, (klr, kv) = self._sums[k], self._shift[k]
            out.append(c / ring[_C][(i - w) % n] - 1.0)
            sma = c if run[_C] >= w else s[0] / w
            out.append(c / sma - 1.0)
            out.append(0.0 if run[_LR] >= w else math.sqrt(_var(s[1], s[2], w)))
            if run[_V] >= w:
                vmean, vstd = v, 0.0
            else:
                vmean = max(kv + s[3] / w, 0.0)
                vstd = math.sqrt(_var(s[3], s[4], w))
            out.append(v / vmean if vmean > 0 else NAN)
            out.append((v - vmean) / vstd if vstd > 0 else NAN)
            out.append(hl if run[_HL] >= w else max(s[5] / w, 0.0))
            if self.trades:
                tmean = t if run[_T] >= w else max(s[6] / w, 0.0)
                out.append(t / tmean if tmean > 0 else NAN)
        r, m = self.rsi_window, self.mfi_window
        up = gain if run[_G] >= r else max(osc[0] / r, 0.0)
        down = loss if run[_L] >= r else max(osc[1] / r, 0.0)
        out.append(_share(up, up + down))
        up = pos * m if run[_P] >= m else max(osc[2], 0.0)
        down = neg * m if run[_N] >= m else max(osc[3], 0.0)
        out.append(_share(up, up + down))
        return out

    def _resum(self, k: int, w: int, i: int) -> None:
        """Re-sum window k exactly from the ring (bounds the running sums' drift), re-centring
        the shifted sums on the window's mean so the variance never cancels badly."""
        n, ring = self.size, self._ring
        idx = [(i - m) % n for m in range(w)]
        lrs = [ring[_LR][j] for j in idx]
        vs = [ring[_V][j] for j in idx]
        klr, kv = math.fsum(lrs) / w, math.fsum(vs) / w
        self._shift[k] = [klr, kv]
        s = self._sums[k]
        s[0] = math.fsum(ring[_C][j] for j in idx)
        s[1] = math.fsum(x - klr for x in lrs)
        s[2] = math.fsum((x - klr) ** 2 for x in lrs)
        s[3] = math.fsum(x - kv for x in vs)
        s[4] = math.fsum((x - kv) ** 2 for x in vs)
        s[5] = math.fsum(ring[_HL][j] for j in idx)
        s[6] = math.fsum(ring[_T][j] for j in idx)


def _var(s1: float, s2: float, w: int) -> float:
    return max((s2 - s1 * s1 / w) / (w - 1), 0.0)


def _share(up: float, total: float) -> float:
    """100·up/total clipped to [0, 100]; a window without moves is neutral (50)."""
    if not total > 0:
        return 50.0
    return min(max(100.0 * up / total, 0.0), 100.0)


class FeatureWindow:
    """1.1's API over the O(1) window: :meth:`update` takes a closed bar (a mapping with OHLCV,
    trades unless ``trades=False``, optionally timestamp), in order, and returns the newest bar's
    features (with its timestamp) once the window is full, else None. A bar whose timestamp is
    not after the last one's is ignored (None). No gap rule here: see :class:`KlineStream`."""

    def __init__(
        self, windows: Any = None, rsi_window: int = 14, mfi_window: int = 14, trades: bool = True
    ) -> None:
        self.window = IncrementalFeatures(windows, rsi_window, mfi_window, trades)
        self.size = self.window.size
        self._last: Any = None

    @property
    def ready(self) -> bool:
        return self.window.ready

    def update(self, bar: Mapping[str, Any]) -> dict[str, Any] | None:
        stamp = bar.get("timestamp")
        if stamp is not None and self._last is not None and not stamp > self._last:
            return None
        if self.window.trades and "trades" not in bar:
            raise ValueError("bar lacks trades (use FeatureWindow(trades=False))")
        values = self.window.push(
            *(float(bar[k]) for k in OHLCV), float(bar["trades"]) if self.window.trades else 0.0
        )
        self._last = stamp if stamp is not None else self._last
        if values is None:
            return None
        out: dict[str, Any] = {} if stamp is None else {"timestamp": stamp}
        out.update(zip(self.window.names, values, strict=True))
        return out


# --- streaming: klines → closed, ordered, deduplicated bars per symbol ------------------------

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


# --- Nuclio streaming handler (Kafka klines → features) --------------------------------------

KAFKA_KIND = "kafka-cluster"


def init_context(context: Any) -> None:
    context.user_data.features = FeatureStreams(
        os.environ.get("FEATURE_WINDOWS") or None,
        int(os.environ.get("RSI_WINDOW", "14")),
        int(os.environ.get("MFI_WINDOW", "14")),
        os.environ.get("BAR_INTERVAL") or None,
    )


def handler(context: Any, event: Any) -> Any:
    """A kline in; the new closed bar's features out, or None (nothing to publish).

    Over HTTP a GET returns the per-symbol counters and bad input a 400 with the reason; from
    Kafka bad input raises, so the trigger's failure policy (retry, dead-letter) takes the record
    and nothing lands on the output topic."""
    streams: FeatureStreams = context.user_data.features
    if getattr(event, "method", None) == "GET":
        return streams.stats()
    try:
        out = streams.offer(event.body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError included
        message = f"not a kline: {exc}"
        kind = getattr(getattr(event, "trigger", None), "kind", None)
        if kind == KAFKA_KIND:
            raise ValueError(message) from exc
        return 400, {"error": message}
    if streams.new_gap is not None:
        context.logger.warn_with("kline gap: window restarts", **streams.new_gap)
    return out


# --- job handler -----------------------------------------------------------------------------


def featurize(
    context: Any,
    dataset: Any = None,
    windows: Any = "6,24,72",
    rsi_window: int = 14,
    mfi_window: int = 14,
    label: str = "updown",
    horizon: int = 1,
    threshold: float = 0.0,
    features_key: str = "features",
    format: str = "parquet",
    interval: str = "",
) -> None:
    """Job: OHLCV dataset (or Binance klines) → features dataset (logged as ``features``, with
    its targets, time column and label horizon in ``meta``) + summary results."""
    if dataset is None:
        raise ValueError("featurize needs an OHLCV dataset input")
    bars = dataset.as_df()
    if "open_time" in bars.columns and "timestamp" not in bars.columns:
        bars = bars_from_klines(bars)
    frame = compute_features(
        bars,
        windows=windows,
        rsi_window=int(rsi_window),
        mfi_window=int(mfi_window),
        label=label,
        horizon=int(horizon),
        threshold=float(threshold),
        interval=interval or None,
    )
    context.logger.info_with(
        "features computed", rows=len(frame), features=len(feature_columns(frame))
    )
    meta = {
        "targets": list(TARGET_COLUMNS),
        "time_column": "timestamp" if "timestamp" in frame.columns else None,
        "label_horizon_bars": int(horizon),
    }
    context.log_dataset(features_key, frame, format=format, meta=meta)
    results: dict[str, Any] = {
        "rows": len(frame),
        "dropped_rows": len(bars) - len(frame),
        "feature_count": len(feature_columns(frame)),
    }
    if label == "updown":
        results["label_up_fraction"] = float(frame["label"].mean())
    context.log_results(results)
