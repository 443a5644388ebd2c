"""backtest 1.2.0's engine: costs, positions from probabilities, the bar-by-bar simulation, its
statistics, round trips and the random-signal null. Pure functions of prices and positions (no
run context), so the tests check each figure against a hand computation.

Conventions:

- the signal at bar t is known at t's close; the position taken then, ``pos_t``, earns the next
  bar's return: ``gross_t = pos_{t-1} · r_t`` with ``r_t = P_t / P_{t-1} - 1``; bar 0 earns
  nothing;
- with ``close_at_end`` (default) the last bar's position is 0: whatever is held is sold at the
  last close and pays its exit cost, so every figure is of a closed book;
- trading at t costs ``c · |pos_t - pos_{t-1}|`` (``pos_{-1} = 0``), ``c`` the cost per side
  per unit traded (:class:`Costs`); a short held over bar t pays ``s · |pos_{t-1}|`` (borrow or
  funding per bar);
- ``net_t = gross_t - cost_t - funding_t``, ``equity_t = initial · Π (1 + net)``, and the
  gross equity compounds ``gross`` alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

BP = 1e-4
FILLS = ("taker", "maker")
SIZINGS = ("unit", "probability", "vol_target")


@dataclass(frozen=True)
class Costs:
    """What trading costs, in basis points.

    ``fill="taker"`` (default: market orders, the conservative case) pays ``fee_bp`` plus half
    the quoted spread plus ``slippage_bp`` per unit traded; ``fill="maker"`` assumes every order
    rests and fills at its limit price: ``maker_fee_bp`` only (negative = a rebate), no spread,
    no slippage — an upper bound on what passive execution achieves, since unfilled orders are
    not modelled. Shorts pay ``short_borrow_bp_year`` (spread over the bars of a year) plus
    ``short_funding_bp_bar`` per bar on the short size held."""

    fee_bp: float = 10.0
    maker_fee_bp: float = 2.0
    fill: str = "taker"
    spread_bp: float = 0.0
    slippage_bp: float = 0.0
    short_borrow_bp_year: float = 0.0
    short_funding_bp_bar: float = 0.0

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {self.fill!r}")
        if self.spread_bp < 0 or self.slippage_bp < 0:
            raise ValueError("spread_bp and slippage_bp must be >= 0")

    @property
    def extra_bp(self) -> float:
        """Per-side cost besides the fee: half-spread + slippage (taker), nothing (maker)."""
        return self.spread_bp / 2 + self.slippage_bp if self.fill == "taker" else 0.0

    @property
    def fee_side_bp(self) -> float:
        return self.fee_bp if self.fill == "taker" else self.maker_fee_bp

    @property
    def per_side(self) -> float:
        """Cost per unit of position traded, as a fraction of equity."""
        return (self.fee_side_bp + self.extra_bp) * BP

    def short_rate(self, periods_per_year: float) -> float:
        """Borrow/funding per bar per unit short, as a fraction."""
        return (self.short_borrow_bp_year / periods_per_year + self.short_funding_bp_bar) * BP

    def with_fee(self, fee_bp: float) -> Costs:
        """The same costs with the fee of the chosen fill set to ``fee_bp``."""
        from dataclasses import replace

        key = "fee_bp" if self.fill == "taker" else "maker_fee_bp"
        return replace(self, **{key: float(fee_bp)})


# --- positions --------------------------------------------------------------------------------


def positions_from_signals(
    signals: Any, *, allow_short: bool = False, threshold: float | None = None
) -> pd.Series:
    """Signals → positions in [-1, 1] ([0, 1] long-only), as in 1.1. With ``threshold`` the
    signal is P(up): long above it, short (or flat) below ``1 - threshold``."""
    s = pd.to_numeric(pd.Series(signals), errors="coerce").fillna(0.0).astype(float)
    if threshold is not None:
        long = (s > threshold).astype(float)
        short = (s < 1.0 - threshold).astype(float) if allow_short else 0.0
        return (long - short).reset_index(drop=True)
    return s.clip(-1.0 if allow_short else 0.0, 1.0).reset_index(drop=True)


def causal_volatility(prices: Any, *, halflife: float, periods_per_year: float) -> np.ndarray:
    """Annualised volatility known at each bar's close: an exponentially weighted mean of the
    squared bar returns up to and including that bar (halflife in bars); NaN until ``halflife``
    returns have been seen."""
    p = pd.Series(np.asarray(prices, dtype=float))
    sq = p.pct_change() ** 2
    var = sq.ewm(halflife=halflife, min_periods=max(int(halflife), 2)).mean()
    return np.sqrt(var.to_numpy() * periods_per_year)


def strategy_positions(
    proba: Any,
    *,
    threshold: float = 0.5,
    band: float = 0.0,
    min_hold: int = 1,
    allow_short: bool = False,
    sizing: str = "unit",
    volatility: Any = None,
    vol_target: float = 0.5,
    max_leverage: float = 1.0,
) -> pd.Series:
    """Positions from P(up) per bar, decided bar by bar:

    1. direction: long when ``p > threshold``, short when ``allow_short`` and
       ``p < 1 - threshold``, else flat (a missing p is flat);
    2. size: ``unit`` 1; ``probability`` ``min(1, |2p - 1|)``; ``vol_target``
       ``min(max_leverage, vol_target / volatility_t)`` (annualised, causal; 0 while unknown);
    3. no-trade band: while ``|p - 0.5| < band`` the position does not change (hysteresis: a
       long entered at p > 0.5 + band is kept until p falls below 0.5 - band);
    4. minimum holding: a position taken at bar t is kept at least until bar ``t + min_hold``
       (it earns ``min_hold`` bar returns) before it may change; flat may change at once.
    """
    if sizing not in SIZINGS:
        raise ValueError(f"sizing must be one of {', '.join(SIZINGS)}, not {sizing!r}")
    if band < 0 or band >= 0.5:
        raise ValueError(f"band must be in [0, 0.5), not {band}")
    if min_hold < 1:
        raise ValueError(f"min_hold must be >= 1 bar, not {min_hold}")
    p = pd.to_numeric(pd.Series(proba), errors="coerce").to_numpy(dtype=float)
    if sizing == "vol_target":
        if volatility is None:
            raise ValueError("vol_target sizing needs the volatility estimate")
        vol = np.asarray(volatility, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            vsize = np.where(vol > 0, np.minimum(max_leverage, vol_target / vol), 0.0)
        vsize = np.nan_to_num(vsize, nan=0.0)
    out = np.zeros(len(p))
    prev, entered = 0.0, -(10**9)
    for t, pt in enumerate(p):
        if math.isnan(pt):
            desired = 0.0
        else:
            direction = 1.0 if pt > threshold else -1.0 if allow_short and pt < 1 - threshold else 0
            if sizing == "unit":
                size = 1.0
            elif sizing == "probability":
                size = min(1.0, abs(2.0 * pt - 1.0))
            else:
                size = float(vsize[t])
            desired = direction * size
            if band > 0 and abs(pt - 0.5) < band:
                desired = prev
        if prev != 0 and t - entered < min_hold:
            desired = prev
        if desired != prev:
            entered = t
            prev = desired
        out[t] = prev
    return pd.Series(out)


# --- simulation -------------------------------------------------------------------------------


def simulate(
    prices: Any,
    positions: Any,
    *,
    costs: Costs | None = None,
    periods_per_year: float = 8760.0,
    initial_capital: float = 1.0,
    close_at_end: bool = True,
) -> pd.DataFrame:
    costs = costs or Costs()
    p = np.asarray(prices, dtype=float)
    pos = pd.Series(np.asarray(positions, dtype=float)).fillna(0.0).to_numpy().copy()
    if len(p) != len(pos):
        raise ValueError(f"{len(p)} prices but {len(pos)} positions")
    if len(p) < 2:
        raise ValueError("a backtest needs at least two bars")
    if np.isnan(p).any() or (p <= 0).any():
        raise ValueError("prices must be positive and present")
    if close_at_end:
        pos[-1] = 0.0
    ret = np.concatenate([[0.0], p[1:] / p[:-1] - 1.0])
    held = np.concatenate([[0.0], pos[:-1]])
    gross = held * ret
    turnover = np.abs(np.diff(pos, prepend=0.0))
    cost = costs.per_side * turnover
    funding = costs.short_rate(periods_per_year) * np.maximum(-held, 0.0)
    net = gross - cost - funding
    equity = initial_capital * np.cumprod(1.0 + net)
    prev_equity = np.concatenate([[initial_capital], equity[:-1]])
    return pd.DataFrame(
        {
            "price": p,
            "position": pos,
            "bar_return": ret,
            "gross_return": gross,
            "turnover": turnover,
            "cost": cost,
            "funding": funding,
            "net_return": net,
            "equity": equity,
            "gross_equity": initial_capital * np.cumprod(1.0 + gross),
            "fees_paid": cost * prev_equity,
            "funding_paid": funding * prev_equity,
        }
    )


# --- statistics -------------------------------------------------------------------------------


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def sharpe_statistics(net: Any, periods_per_year: float) -> dict[str, float]:
    """Sharpe of per-bar returns and its uncertainty.

    ``sharpe = mean / std(ddof=1) · √periods_per_year``; skew and kurtosis are the population
    moments (``m3 / m2^1.5``, Pearson ``m4 / m2²``, normal = 3). The per-bar Sharpe ``SR`` has
    variance ``(1 - skew·SR + (kurtosis - 1)/4 · SR²) / (T - 1)`` (Lo 2002, Mertens 2002, as in
    Bailey & López de Prado's PSR); ``sharpe_se`` is its root annualised, and
    ``psr = Φ(SR / se)`` the probability that the true Sharpe is above 0."""
    x = np.asarray(net, dtype=float)
    n = len(x)
    out = {"sharpe": 0.0, "periods_per_year": float(periods_per_year), "n_periods": float(n)}
    out.update({"returns_skew": 0.0, "returns_kurtosis": 3.0, "sharpe_se": math.nan})
    out["psr"] = math.nan
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    if std <= 0:
        return out
    sr = float(x.mean()) / std
    centred = x - x.mean()
    m2 = float((centred**2).mean())
    skew = float((centred**3).mean()) / m2**1.5
    kurt = float((centred**4).mean()) / m2**2
    var = max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2, 1e-12) / (n - 1)
    se = math.sqrt(var)
    root = math.sqrt(periods_per_year)
    out.update(
        sharpe=sr * root,
        returns_skew=skew,
        returns_kurtosis=kurt,
        sharpe_se=se * root,
        psr=normal_cdf(sr / se),
    )
    return out


def round_trips(frame: pd.DataFrame, costs: Costs | None = None) -> pd.DataFrame:
    """One row per round trip: a maximal run of bars holding a position of one sign, entered at
    bar ``entry`` and left at bar ``exit`` (the first bar whose position has another sign, or
    is flat). Its return compounds the entry cost ``c·|pos_entry|``, the bar returns it earned
    (bars entry+1..exit, less funding, and resizing costs on bars strictly inside) and the exit
    cost ``c·|pos_{exit-1}|``; a reversal's cost is split between the two trades that way."""
    c = (costs or Costs()).per_side
    pos = frame["position"].to_numpy(dtype=float)
    side = np.sign(pos)
    net_inside = (frame["gross_return"] - frame["funding"] - frame["cost"]).to_numpy(dtype=float)
    gross_funding = (frame["gross_return"] - frame["funding"]).to_numpy(dtype=float)
    rows = []
    n, t = len(pos), 0
    while t < n:
        if side[t] == 0 or (t > 0 and side[t] == side[t - 1]):
            t += 1
            continue
        entry = t
        t += 1
        while t < n and side[t] == side[entry]:
            t += 1
        exit_ = t  # == n only when the book is left open (close_at_end false)
        mult = 1.0 - c * abs(pos[entry])
        mult *= float(np.prod(1.0 + net_inside[entry + 1 : exit_]))
        if exit_ < n:
            mult *= (1.0 + gross_funding[exit_]) * (1.0 - c * abs(pos[exit_ - 1]))
        rows.append(
            {
                "entry": entry,
                "exit": exit_,
                "side": int(side[entry]),
                "bars": exit_ - entry,
                "return": mult - 1.0,
            }
        )
    return pd.DataFrame(rows, columns=["entry", "exit", "side", "bars", "return"])


def drawdown(equity: np.ndarray, initial_capital: float = 1.0) -> tuple[np.ndarray, int]:
    """(drawdown per bar as a positive fraction, the longest run of bars under water)."""
    peak = np.maximum.accumulate(np.maximum(equity, initial_capital))
    dd = 1.0 - equity / peak
    longest = run = 0
    for under in dd > 1e-12:
        run = run + 1 if under else 0
        longest = max(longest, run)
    return dd, longest


def break_even_cost(frame: pd.DataFrame) -> float:
    """The cost per side ``c`` at which the run ends where it started: the root of
    ``Σ log(1 + gross_t - funding_t - c·turnover_t) = 0`` (bisection). Negative when the run
    loses before any trading cost (only a rebate would break even); NaN without trades."""
    g = (frame["gross_return"] - frame["funding"]).to_numpy(dtype=float)
    u = frame["turnover"].to_numpy(dtype=float)
    if u.sum() <= 0:
        return math.nan

    def total(c: float) -> float:
        return float(np.log(1.0 + g - c * u).sum())

    traded = u > 0
    hi = float(((1.0 + g[traded]) / u[traded]).min()) * (1.0 - 1e-9)
    lo = 0.0
    while total(lo) < 0:
        lo = lo * 2 - 1e-4
        if lo < -1.0:
            return math.nan
    if total(hi) >= 0:
        return hi
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) >= 0 else (lo, mid)
    return (lo + hi) / 2


def statistics(
    frame: pd.DataFrame,
    *,
    costs: Costs | None = None,
    periods_per_year: float = 8760.0,
    initial_capital: float = 1.0,
) -> dict[str, float]:
    """Every figure of a simulated run. Per-bar statistics (Sharpe, Sortino, skew, …) use the
    ``n - 1`` bar returns of bars 1..n-1 (bar 0 earns nothing; its entry cost is in the equity);
    undefined figures are NaN (logged as null)."""
    costs = costs or Costs()
    net = frame["net_return"].to_numpy(dtype=float)[1:]
    equity = frame["equity"].to_numpy(dtype=float)
    held = frame["position"].shift(1).fillna(0.0).to_numpy(dtype=float)[1:]
    out = sharpe_statistics(net, periods_per_year)
    total = float(equity[-1] / initial_capital - 1.0)
    gross_total = float(frame["gross_equity"].iloc[-1] / initial_capital - 1.0)
    years = len(net) / periods_per_year
    annual = (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1.0 else -1.0
    downside = float(np.sqrt((np.minimum(net, 0.0) ** 2).mean())) if len(net) else 0.0
    dd, dd_bars = drawdown(equity, initial_capital)
    trips = round_trips(frame, costs)
    wins = trips["return"][trips["return"] > 0].sum()
    losses = -trips["return"][trips["return"] < 0].sum()
    hits = (frame["gross_return"].to_numpy()[1:] > 0) & (held != 0)
    be = break_even_cost(frame)
    out.update(
        {
            "cumulative_return": total,
            "net_return": total,
            "gross_return": gross_total,
            "fee_drag": gross_total - total,
            "annualized_return": float(annual),
            "sortino": float(net.mean()) / downside * math.sqrt(periods_per_year)
            if downside > 0
            else math.nan,
            "max_drawdown": float(dd.max()),
            "max_drawdown_bars": float(dd_bars),
            "calmar": float(annual) / float(dd.max()) if dd.max() > 0 else math.nan,
            "hit_rate": float(hits.sum() / (held != 0).sum()) if (held != 0).any() else math.nan,
            "trades": float((frame["turnover"] > 0).sum()),
            "turnover": float(frame["turnover"].sum()),
            "exposure": float(np.abs(held).mean()) if len(held) else 0.0,
            "time_in_market": float((held != 0).mean()) if len(held) else 0.0,
            "round_trips": float(len(trips)),
            "win_rate": float((trips["return"] > 0).mean()) if len(trips) else math.nan,
            "profit_factor": float(wins / losses) if losses > 0 else math.nan,
            "avg_holding_bars": float(trips["bars"].mean()) if len(trips) else math.nan,
            "cost_per_side_bp": costs.per_side / BP,
            "break_even_fee_bp": be / BP - costs.extra_bp if not math.isnan(be) else math.nan,
            "fees_paid": float(frame["fees_paid"].sum()),
            "funding_paid": float(frame["funding_paid"].sum()),
            "final_equity": float(equity[-1]),
        }
    )
    return out


def fee_sweep(
    prices: Any, positions: Any, fees_bp: Any, *, costs: Costs, periods_per_year: float
) -> dict[str, float]:
    """Net return and Sharpe of the same positions at each fee (the chosen fill's fee; spread,
    slippage and funding unchanged): ``fee_<bp>bp_net_return``, ``fee_<bp>bp_sharpe``."""
    out: dict[str, float] = {}
    for fee in fees_bp:
        cost = costs.with_fee(fee)
        frame = simulate(prices, positions, costs=cost, periods_per_year=periods_per_year)
        stats = statistics(frame, costs=cost, periods_per_year=periods_per_year)
        tag = f"fee_{fee:g}bp".replace(".", "_").replace("-", "m")
        out[f"{tag}_net_return"] = stats["net_return"]
        out[f"{tag}_sharpe"] = stats["sharpe"]
    return out
