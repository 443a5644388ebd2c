"""backtest 1.2.0's figures (PNG artifacts): equity gross vs net with the trades and the
drawdown, per-fold equity of a walk-forward, and the random-signal null with the strategy's
mark."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _x(frame: pd.DataFrame) -> Any:
    if "timestamp" in frame.columns:
        # Strings would become one categorical tick per bar (slow and unreadable).
        stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
        if stamps.notna().all():
            return stamps
    return pd.Series(frame.index)


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return buf.getvalue()


def equity_figure(frame: pd.DataFrame, stats: Mapping[str, float], title: str = "") -> Any:
    plt = _plt()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    x = _x(frame)
    top.plot(x, frame["gross_equity"], label=f"gross ({stats['gross_return']:+.1%})", alpha=0.8)
    top.plot(
        x,
        frame["equity"],
        label=f"net ({stats['net_return']:+.1%}, Sharpe {stats['sharpe']:.2f})",
    )
    top.plot(
        x,
        frame["bh_equity"],
        label=f"buy & hold ({stats['bh_cumulative_return']:+.1%})",
        alpha=0.6,
    )
    pos = frame["position"].to_numpy()
    prev = np.concatenate([[0.0], pos[:-1]])
    entries = (pos != 0) & (np.sign(pos) != np.sign(prev))
    exits = (prev != 0) & (np.sign(pos) != np.sign(prev))
    if entries.sum() + exits.sum() <= 2000:  # beyond that markers are a smear, not information
        size = 18 if entries.sum() + exits.sum() <= 200 else 5
        top.scatter(x[entries], frame["equity"][entries], marker="^", color="green", s=size)
        top.scatter(x[exits], frame["equity"][exits], marker="v", color="red", s=size)
    top.set_yscale("log")  # equal moves look equal, and -99% still shows beside +400%
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    top.yaxis.set_major_formatter(plain)
    low, high = top.get_ylim()
    # within a decade the minor ticks are the only labels; across several they crowd
    top.yaxis.set_minor_formatter(plain if high / max(low, 1e-12) < 10 else NullFormatter())
    top.set_ylabel("equity (log scale)")
    top.set_title(
        title
        or f"{int(stats['round_trips'])} round trips, fee drag {stats['fee_drag'] * 100:.0f} pts, "
        f"turnover {stats['turnover']:.0f}"
    )
    top.legend(loc="upper left", fontsize=8)
    dd = 1.0 - frame["equity"] / frame["equity"].cummax().clip(lower=1.0)
    bottom.fill_between(x, -dd, 0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown")
    fig.tight_layout()
    return fig


def folds_figure(frame: pd.DataFrame, folds: pd.Series) -> Any:
    """Each walk-forward fold's net and buy-and-hold equity, rebased to 1 at its start."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = _x(frame)
    for fold in sorted(set(folds.tolist())):
        mask = (folds == fold).to_numpy()
        net = (1.0 + frame.loc[mask, "net_return"]).cumprod()
        bh = (1.0 + frame.loc[mask, "bh_net_return"]).cumprod()
        line = ax.plot(x[mask], net, label=f"fold {fold}: {net.iloc[-1] - 1:+.1%}")
        ax.plot(x[mask], bh, color=line[0].get_color(), alpha=0.35, linestyle="--")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_title("walk-forward folds: net equity (solid) vs buy & hold (dashed), each from 1")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def null_figure(null: pd.DataFrame, marks: Mapping[str, float], percentile: float) -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(null["net_return"], bins=30, color="tab:grey", alpha=0.7)
    for (label, value), color in zip(
        marks.items(), ("tab:blue", "tab:orange", "tab:green"), strict=False
    ):
        ax.axvline(value, color=color, linewidth=2, label=f"{label} {value:+.1%}")
    ax.set_xlabel("net return")
    ax.set_title(
        f"{len(null)} random-signal paths (same trades, time in market, turnover): "
        f"strategy at the {percentile:.0f}th percentile",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
