"""market_features 1.2.0, streaming window: O(1) running sums over ring buffers for one stream of
consecutive closed bars (:class:`IncrementalFeatures`), and 1.1's :class:`FeatureWindow` API over
it. The numbers equal :func:`batch.compute_features`' within the tolerance the item states."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .batch import NAN, OHLCV, feature_names, lookback, parse_windows

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
