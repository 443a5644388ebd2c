"""backtest 1.2.0's controls: the baselines every result is read against.

- buy-and-hold: long 1 from the first bar, sold at the last (one entry and one exit cost);
- always long when flat: the strategy's own positions with every flat bar made long (+1) —
  what the model's abstentions are worth against simply staying in the market. A long-only,
  unit-size strategy's version is buy-and-hold; a long/short one keeps its shorts;
- random signals: seeded random position paths with the strategy's trades placed at random
  times (:func:`random_paths`): same number of round trips, same holding lengths (so the same
  time in market and exposure) and the same turnover, so the same costs; the strategy's net
  return is ranked within them (percentile, p-value);
- shuffled labels (walk-forward, in the handler): the same pipeline refit on permuted labels.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the item's files import each other only through backtest.py's loader
    from engine import Costs

NULL_CHUNK = 50  # paths simulated at once: bounds the memory of (paths x bars) arrays


def long_when_flat(positions: Any) -> pd.Series:
    pos = pd.Series(np.asarray(positions, dtype=float)).fillna(0.0)
    return pos.where(pos != 0, 1.0)


def trade_blocks(positions: Any) -> list[np.ndarray]:
    """The strategy's round trips as blocks of positions: maximal runs of one nonzero sign."""
    pos = np.asarray(positions, dtype=float)
    side = np.sign(pos)
    change = np.flatnonzero(np.diff(side, prepend=0.0) != 0)
    bounds = np.append(change, len(pos))
    return [pos[a:b] for a, b in pairwise(bounds) if side[a] != 0]


def random_paths(
    positions: Any, *, n_paths: int = 200, seed: int = 0, keep_last_flat: bool = True
) -> np.ndarray:
    """``n_paths`` x bars random positions with the strategy's round trips at random times.

    The blocks (each trade's positions, sizes included) are shuffled and separated by random
    flat gaps: the flat bars are spread uniformly (stars and bars) over the k+1 gaps, with at
    least one bar between two trades when there are enough flat bars (so trades never merge;
    with fewer, adjacent trades of one side may merge). A path whose source ends flat (a closed
    book) ends flat too. Seeded: the same seed gives the same paths."""
    pos = np.asarray(positions, dtype=float)
    n = len(pos)
    rng = np.random.default_rng(seed)
    blocks = trade_blocks(pos)
    span = n - 1 if keep_last_flat and n and pos[-1] == 0 else n
    held = sum(len(b) for b in blocks)
    k = len(blocks)
    out = np.zeros((n_paths, n))
    if k == 0:
        return out
    free = span - held
    spacer = 1 if free >= k - 1 else 0
    spare = free - spacer * (k - 1)
    for i in range(n_paths):
        order = rng.permutation(k)
        cuts = np.sort(rng.choice(spare + k, size=k, replace=False))
        gaps = np.diff(np.concatenate([[-1], cuts, [spare + k]])) - 1
        gaps[1:-1] += spacer
        at = int(gaps[0])
        row = out[i]
        for j, block in enumerate(order):
            b = blocks[block]
            row[at : at + len(b)] = b
            at += len(b) + int(gaps[j + 1])
    return out


def simulate_paths(
    prices: Any, paths: np.ndarray, *, costs: Costs, periods_per_year: float
) -> pd.DataFrame:
    """Net return, gross return, Sharpe, turnover and exposure of each path (rows of
    ``paths``), by the engine's conventions (positions taken at a close earn the next bar)."""
    p = np.asarray(prices, dtype=float)
    ret = p[1:] / p[:-1] - 1.0
    rate = costs.short_rate(periods_per_year)
    rows = []
    for start in range(0, len(paths), NULL_CHUNK):
        pos = paths[start : start + NULL_CHUNK]
        held = pos[:, :-1]
        gross = held * ret
        turnover = np.abs(np.diff(pos, axis=1, prepend=0.0))
        net = gross - costs.per_side * turnover[:, 1:] - rate * np.maximum(-held, 0.0)
        total = (1.0 - costs.per_side * turnover[:, 0]) * np.prod(1.0 + net, axis=1) - 1.0
        std = net.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sharpe = np.where(std > 0, net.mean(axis=1) / std, 0.0) * np.sqrt(periods_per_year)
        rows.append(
            pd.DataFrame(
                {
                    "net_return": total,
                    "gross_return": np.prod(1.0 + gross, axis=1) - 1.0,
                    "sharpe": sharpe,
                    "turnover": turnover.sum(axis=1),
                    "exposure": np.abs(held).mean(axis=1),
                    "time_in_market": (held != 0).mean(axis=1),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def rank_in_null(value: float, null: Any) -> dict[str, float]:
    """Where ``value`` falls in the null: percentile (share below, ties half), one-sided
    p-value ``(1 + #null >= value) / (N + 1)``, and the null's mean and 5%/95% quantiles."""
    x = np.asarray(null, dtype=float)
    # equal up to rounding: a path identical to the strategy compounds in another order
    tie = np.isclose(x, value, rtol=1e-9, atol=1e-12)
    below = float(((x < value) & ~tie).sum())
    return {
        "percentile": 100.0 * (below + 0.5 * float(tie.sum())) / len(x),
        "p_value": (1.0 + float(((x >= value) | tie).sum())) / (len(x) + 1.0),
        "mean": float(x.mean()),
        "q05": float(np.quantile(x, 0.05)),
        "q95": float(np.quantile(x, 0.95)),
    }


def null_control(
    prices: Any,
    positions: Any,
    strategy_net_return: float,
    *,
    costs: Costs,
    periods_per_year: float,
    n_paths: int = 200,
    seed: int = 0,
) -> tuple[dict[str, float], pd.DataFrame]:
    """The strategy's net return ranked among ``n_paths`` random-signal paths (``null_*``)."""
    pos = np.asarray(positions, dtype=float)
    paths = random_paths(pos, n_paths=n_paths, seed=seed)
    null = simulate_paths(prices, paths, costs=costs, periods_per_year=periods_per_year)
    rank = rank_in_null(strategy_net_return, null["net_return"])
    out = {
        f"null_{k}_net_return" if k in ("mean", "q05", "q95") else f"null_{k}": v
        for k, v in rank.items()
    }
    out.update({"null_paths": float(n_paths), "null_seed": float(seed)})
    out["null_mean_sharpe"] = float(null["sharpe"].mean())
    return out, null
