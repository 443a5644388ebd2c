"""backtest 1.1.0 — prices + signals (or a model + features) → positions, equity and statistics.

New in 1.1.0 (1.0.0 is unchanged):

- walk-forward folds are purged: ``horizon`` bars (the label's look-ahead, inferred from
  ``future_return`` and the prices when not given, at least 1) are left out between each
  training window and its test fold, so no training label is computed from a price inside the
  fold it is tested on;
- with a model (logged or walk-forward) the bars must be consecutive: timestamps strictly
  increasing with no step larger than the median bar spacing, else a clear error — or, with
  ``allow_gaps``, a warning and the gaps logged as results — instead of returns silently
  computed across missing bars.

Conventions (what the hand-computed tests check):

- the signal at bar t is known at t's close; the position taken then, ``pos_t``, earns the next
  bar's return: ``gross_{t+1} = pos_t · (P_{t+1}/P_t - 1)``; nothing is earned on bar 0;
- a trade at t costs ``fee_rate · |pos_t - pos_{t-1}|`` of equity (``pos_{-1} = 0``), so buying
  in and selling out each pay the fee once;
- ``net_t = gross_t - cost_t``; ``equity_t = initial · Π (1 + net)``;
- Sharpe = mean(net) / std(net, ddof=1) · √periods_per_year over bars 1..n-1;
- max drawdown = max over t of 1 - equity_t / max_{s≤t} equity_s (a positive fraction);
- hit rate = share of bars held with a position (pos_{t-1} ≠ 0) whose gross return is > 0;
- buy-and-hold is the same engine with ``pos_t = 1`` everywhere (one entry fee).
"""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class BacktestResult:
    frame: pd.DataFrame  # price, position, gross, cost, net, equity (+ bh_*)
    stats: dict[str, float] = field(default_factory=dict)


def positions_from_signals(
    signals: pd.Series, *, allow_short: bool = False, threshold: float | None = None
) -> pd.Series:
    """Signals → positions in [-1, 1] ([0, 1] long-only). With ``threshold`` the signal is a
    probability of "up": long above it, short (or flat) below ``1 - threshold``."""
    s = pd.to_numeric(signals, errors="coerce").fillna(0.0).astype(float)
    if threshold is not None:
        long = (s > threshold).astype(float)
        short = (s < 1.0 - threshold).astype(float) if allow_short else 0.0
        return long - short
    return s.clip(-1.0 if allow_short else 0.0, 1.0)


def simulate(
    prices: pd.Series,
    positions: pd.Series,
    *,
    fee_rate: float = 0.001,
    initial_capital: float = 1.0,
) -> pd.DataFrame:
    p = pd.Series(np.asarray(prices, dtype=float))
    pos = pd.Series(np.asarray(positions, dtype=float)).fillna(0.0)
    if len(p) != len(pos):
        raise ValueError(f"{len(p)} prices but {len(pos)} positions")
    if len(p) < 2:
        raise ValueError("a backtest needs at least two bars")
    if (p <= 0).any() or p.isna().any():
        raise ValueError("prices must be positive and present")
    ret = p.pct_change().fillna(0.0)
    gross = pos.shift(1).fillna(0.0) * ret
    cost = fee_rate * (pos - pos.shift(1).fillna(0.0)).abs()
    net = gross - cost
    equity = initial_capital * (1.0 + net).cumprod()
    prev_equity = equity.shift(1).fillna(initial_capital)
    return pd.DataFrame(
        {
            "price": p,
            "position": pos,
            "gross_return": gross,
            "cost": cost,
            "net_return": net,
            "equity": equity,
            "fees_paid": cost * prev_equity,
        }
    )


def statistics(
    frame: pd.DataFrame, *, periods_per_year: float = 8760.0, initial_capital: float = 1.0
) -> dict[str, float]:
    net = frame["net_return"].iloc[1:]
    equity = frame["equity"]
    std = float(net.std(ddof=1)) if len(net) > 1 else 0.0
    sharpe = float(net.mean()) / std * math.sqrt(periods_per_year) if std > 0 else 0.0
    peak = equity.cummax().clip(lower=initial_capital)
    drawdown = 1.0 - equity / peak
    held = frame["position"].shift(1).fillna(0.0) != 0
    hits = (frame["gross_return"] > 0) & held
    trades = int((frame["position"].diff().fillna(frame["position"]) != 0).sum())
    years = len(frame) / periods_per_year
    total = float(equity.iloc[-1] / initial_capital - 1.0)
    annual = (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1.0 else -1.0
    return {
        "cumulative_return": total,
        "annualized_return": float(annual),
        "sharpe": sharpe,
        "max_drawdown": float(drawdown.max()),
        "hit_rate": float(hits.sum() / held.sum()) if held.sum() else 0.0,
        "trades": float(trades),
        "fees_paid": float(frame["fees_paid"].sum()),
        "exposure": float((frame["position"] != 0).mean()),
        "final_equity": float(equity.iloc[-1]),
    }


def run_backtest(
    prices: pd.Series,
    positions: pd.Series,
    *,
    fee_rate: float = 0.001,
    periods_per_year: float = 8760.0,
    initial_capital: float = 1.0,
) -> BacktestResult:
    """Strategy and buy-and-hold side by side; stats of the latter are prefixed ``bh_``."""
    frame = simulate(prices, positions, fee_rate=fee_rate, initial_capital=initial_capital)
    stats = statistics(frame, periods_per_year=periods_per_year, initial_capital=initial_capital)
    hold = simulate(
        prices, pd.Series(np.ones(len(frame))), fee_rate=fee_rate, initial_capital=initial_capital
    )
    bh = statistics(hold, periods_per_year=periods_per_year, initial_capital=initial_capital)
    frame["bh_equity"] = hold["equity"].to_numpy()
    stats.update(
        {
            f"bh_{k}": v
            for k, v in bh.items()
            if k
            in ("cumulative_return", "annualized_return", "sharpe", "max_drawdown", "final_equity")
        }
    )
    stats["excess_return"] = stats["cumulative_return"] - stats["bh_cumulative_return"]
    return BacktestResult(frame=frame, stats=stats)


# --- model-driven signals ---------------------------------------------------------------------


def _model_scores(model: Any, x: pd.DataFrame) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x))
        return proba[:, -1] if proba.ndim == 2 else proba
    return np.asarray(model.predict(x), dtype=float)


def feature_matrix(df: pd.DataFrame, model: Any = None, exclude: Any = ()) -> pd.DataFrame:
    names = getattr(model, "feature_names_in_", None) if model is not None else None
    if names is None and model is not None and hasattr(model, "get_booster"):
        names = model.get_booster().feature_names
    if names is not None:
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise ValueError(f"the dataset lacks feature(s) the model needs: {missing[:10]}")
        return df[list(names)]
    drop = [c for c in exclude if c in df.columns]
    return df.drop(columns=drop).select_dtypes(include=["number", "bool"])


MAX_INFERRED_HORIZON = 500


def infer_horizon(
    df: pd.DataFrame,
    *,
    price_column: str = "close",
    target_columns: Any = ("future_return",),
    max_horizon: int = MAX_INFERRED_HORIZON,
) -> int | None:
    """The look-ahead ``h`` of a forward-return target (``target_t = P_{t+h} / P_t - 1``, as
    market_features writes ``future_return``), found by matching it against the prices; None
    when no column matches for any h up to ``max_horizon``."""
    if price_column not in df.columns:
        return None
    prices = pd.to_numeric(df[price_column], errors="coerce").to_numpy(dtype=float)
    for column in target_columns:
        if column not in df.columns:
            continue
        target = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        for h in range(1, min(max_horizon, len(df) - 3) + 1):
            with np.errstate(divide="ignore", invalid="ignore"):
                implied = prices[h:] / prices[:-h] - 1.0
            actual = target[:-h]
            ok = np.isfinite(implied) & np.isfinite(actual)
            if ok.sum() < 3:
                continue
            close = np.isclose(actual[ok], implied[ok], rtol=1e-6, atol=1e-10)
            # A few missing bars shift a few targets; most rows still pin h down.
            if close.mean() >= 0.95:
                return h
    return None


def purged_splits(n_rows: int, n_splits: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window (train, test) row positions with ``gap`` rows purged between the end of
    each training window and its test fold (the test folds are those of an unpurged split)."""
    from sklearn.model_selection import TimeSeriesSplit

    if gap < 0:
        raise ValueError(f"the purge gap must be >= 0 bars, not {gap}")
    fold = n_rows // (n_splits + 1)
    if fold < 1 or n_rows - n_splits * fold - gap < 1:
        raise ValueError(
            f"{n_rows} rows are too few for {n_splits} walk-forward folds with a purge gap of "
            f"{gap} bars: the first training window would be empty"
        )
    splits = TimeSeriesSplit(n_splits=n_splits, gap=gap).split(np.zeros((n_rows, 1)))
    return [(train, test) for train, test in splits]


def bar_gaps(timestamps: pd.Series) -> dict[str, Any]:
    """How far the bars are from consecutive: steps larger than the median bar spacing.

    Raises ValueError when the timestamps do not parse or do not strictly increase (after the
    handler's sort, that means repeated bars)."""
    stamps = pd.to_datetime(timestamps, utc=True, errors="coerce")
    if stamps.isna().any():
        bad = timestamps[stamps.isna()].iloc[0]
        raise ValueError(f"timestamp {bad!r} is not a date/time; cannot check the bars")
    steps = stamps.diff().iloc[1:]
    if len(steps) == 0:
        return {"bar_gaps": 0, "largest_gap_bars": 0.0, "bar_spacing": ""}
    if (steps <= pd.Timedelta(0)).any():
        where = int(np.argmax((steps <= pd.Timedelta(0)).to_numpy())) + 1
        raise ValueError(
            f"timestamps must strictly increase; bar {where} ({stamps.iloc[where]}) repeats or "
            "precedes the one before it"
        )
    spacing = steps.median()
    big = steps > spacing
    first = int(np.argmax(big.to_numpy())) + 1 if big.any() else None
    return {
        "bar_gaps": int(big.sum()),
        "largest_gap_bars": float(steps.max() / spacing),
        "bar_spacing": str(spacing),
        "first_gap": "" if first is None else f"{stamps.iloc[first - 1]} → {stamps.iloc[first]}",
    }


def walk_forward_scores(
    df: pd.DataFrame,
    *,
    model_class: str,
    label_column: str = "label",
    n_splits: int = 5,
    exclude: Any = (),
    class_kwargs: Mapping[str, Any] | None = None,
    scale: bool = False,
    purge: int = 1,
) -> tuple[pd.Series, pd.Series]:
    """Out-of-sample scores and fold numbers: fold k is predicted by a model fit on folds < k
    (expanding window) minus the last ``purge`` rows, whose labels look into fold k. Rows of
    the first fold have no score (NaN) and fold 0."""
    module_name, _, attr = model_class.rpartition(".")
    cls = getattr(importlib.import_module(module_name), attr)
    x = feature_matrix(df, None, exclude=[label_column, *exclude])
    y = df[label_column].to_numpy()
    scores = pd.Series(np.nan, index=df.index)
    folds = pd.Series(0, index=df.index)
    splits = purged_splits(len(x), n_splits, purge)
    for fold, (train_idx, test_idx) in enumerate(splits, start=1):
        model = cls(**dict(class_kwargs or {}))
        if scale:
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            model = make_pipeline(StandardScaler(), model)
        model.fit(x.iloc[train_idx], y[train_idx])
        scores.iloc[test_idx] = _model_scores(model, x.iloc[test_idx])
        folds.iloc[test_idx] = fold
    return scores, folds


def fold_statistics(
    frame: pd.DataFrame, folds: pd.Series, *, periods_per_year: float
) -> pd.DataFrame:
    """Per walk-forward fold: the strategy's and buy-and-hold's return over the fold, Sharpe."""
    rows = []
    bh_net = frame["bh_equity"].pct_change().fillna(frame["bh_equity"].iloc[0] - 1.0)
    for fold in sorted(set(folds.tolist())):
        mask = (folds == fold).to_numpy()
        net = frame.loc[mask, "net_return"]
        std = float(net.std(ddof=1)) if len(net) > 1 else 0.0
        rows.append(
            {
                "fold": int(fold),
                "bars": int(mask.sum()),
                "cumulative_return": float((1.0 + net).prod() - 1.0),
                "sharpe": float(net.mean()) / std * math.sqrt(periods_per_year) if std > 0 else 0.0,
                "bh_cumulative_return": float((1.0 + bh_net[mask]).prod() - 1.0),
            }
        )
    return pd.DataFrame(rows)


def equity_figure(frame: pd.DataFrame, stats: Mapping[str, float], title: str = "") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    x: Any = frame.index
    if "timestamp" in frame.columns:
        # Strings would become one categorical tick per bar (slow and unreadable).
        stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
        x = stamps if stamps.notna().all() else frame.index
    top.plot(
        x,
        frame["equity"],
        label=f"strategy ({stats['cumulative_return']:+.1%}, Sharpe {stats['sharpe']:.2f})",
    )
    top.plot(
        x,
        frame["bh_equity"],
        label=f"buy & hold ({stats['bh_cumulative_return']:+.1%}, Sharpe {stats['bh_sharpe']:.2f})",
        alpha=0.7,
    )
    top.set_ylabel("equity")
    top.set_title(title or "equity curve")
    top.legend(loc="upper left")
    drawdown = 1.0 - frame["equity"] / frame["equity"].cummax()
    bottom.fill_between(x, -drawdown, 0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown")
    fig.tight_layout()
    return fig


# --- run-context wiring -----------------------------------------------------------------------


def _targets(df: pd.DataFrame, label_column: str) -> list[str]:
    """Columns that may hold a forward return: future_return, and a label that is one."""
    out = ["future_return"]
    if label_column in df.columns and label_column != "future_return":
        values = pd.to_numeric(df[label_column], errors="coerce").dropna()
        if values.nunique() > 2:  # a return label (market_features label=return), not up/down
            out.append(label_column)
    return out


def _check_consecutive(
    context: Any, df: pd.DataFrame, timestamp_column: str, *, allow: bool
) -> None:
    """A model's positions are only as good as the bar-to-bar returns they earn: refuse (or,
    with ``allow``, log) bars that skip time."""
    if timestamp_column not in df.columns:
        context.logger.warn_with(
            "no timestamps: cannot check that the bars are consecutive", column=timestamp_column
        )
        return
    gaps = bar_gaps(df[timestamp_column])
    if not gaps["bar_gaps"]:
        context.log_result("bar_gaps", 0)
        return
    what = (
        f"{gaps['bar_gaps']} gap(s) between bars (spacing {gaps['bar_spacing']}, largest "
        f"{gaps['largest_gap_bars']:.1f} bars, first {gaps['first_gap']})"
    )
    if not allow:
        raise ValueError(
            f"the bars are not consecutive: {what}; returns across a gap are not bar returns. "
            "Backtest consecutive bars (a time-ordered test set), or pass allow_gaps=true to "
            "go on with the gaps logged as results"
        )
    context.logger.warn_with("bars are not consecutive; returns span the gaps", **gaps)
    context.log_results(
        {"bar_gaps": gaps["bar_gaps"], "largest_gap_bars": gaps["largest_gap_bars"]}
    )


def _frame(item: Any) -> pd.DataFrame | None:
    if item is None:
        return None
    return item.as_df() if hasattr(item, "as_df") else pd.DataFrame(item)


def _load_model(uri: Any) -> Any:
    if not isinstance(uri, str):
        return uri
    from tickrun.functions.runs import load_model

    loaded = load_model(uri)
    return loaded[0] if isinstance(loaded, tuple) else loaded


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def backtest(
    context: Any,
    dataset: Any = None,
    prices: Any = None,
    model: Any = None,
    signal_column: str = "signal",
    price_column: str = "close",
    timestamp_column: str = "timestamp",
    label_column: str = "label",
    threshold: float = 0.5,
    allow_short: Any = False,
    fee_rate: float = 0.001,
    periods_per_year: float = 8760.0,
    walk_forward_splits: int = 0,
    model_class: str = "sklearn.linear_model.LogisticRegression",
    drop_columns: Any = "future_return",
    scale: Any = True,
    horizon: int = 0,
    allow_gaps: Any = False,
    **kwargs: Any,
) -> None:
    """Backtest signals from ``dataset[signal_column]``, a logged ``model`` over the dataset's
    features, or (``walk_forward_splits`` > 1) models refit walk-forward on the dataset, with
    ``horizon`` bars purged before each test fold. Prices come from ``dataset[price_column]``
    or the ``prices`` input joined on timestamp."""
    df = _frame(dataset)
    if df is None:
        raise ValueError("backtest needs a dataset input (signals or features)")
    class_kwargs = {k[len("CLASS_") :]: v for k, v in kwargs.items() if k.startswith("CLASS_")}
    unknown = [k for k in kwargs if not k.startswith("CLASS_")]
    if unknown:
        raise TypeError(f"unexpected parameter(s) {unknown}")
    if price_column not in df.columns:
        px = _frame(prices)
        if px is None or timestamp_column not in df.columns or timestamp_column not in px.columns:
            raise ValueError(
                f"no {price_column!r} column in the dataset; give a prices input "
                f"that shares its {timestamp_column!r} column"
            )
        px = px[[timestamp_column, price_column]].copy()
        px[timestamp_column] = pd.to_datetime(px[timestamp_column], utc=True)
        df = df.copy()
        df[timestamp_column] = pd.to_datetime(df[timestamp_column], utc=True)
        df = df.merge(px, on=timestamp_column, how="inner")
    if timestamp_column in df.columns:
        df = df.sort_values(timestamp_column).reset_index(drop=True)
    exclude = [
        c
        for c in [
            price_column,
            timestamp_column,
            signal_column,
            *str(drop_columns or "").split(","),
        ]
        if c
    ]
    folds = int(walk_forward_splits)
    mode = "walk_forward" if folds > 1 else ("model" if model is not None else "signals")
    if mode != "signals":
        _check_consecutive(context, df, timestamp_column, allow=_flag(allow_gaps))
    if mode == "walk_forward":
        purge = int(horizon)
        if purge < 0:
            raise ValueError(f"horizon must be >= 0 bars (0: inferred), not {purge}")
        if purge == 0:
            inferred = infer_horizon(
                df, price_column=price_column, target_columns=_targets(df, label_column)
            )
            purge = inferred or 1
            context.logger.info_with(
                "walk-forward purge gap",
                bars=purge,
                how="inferred from the target" if inferred else "assumed (no forward target)",
            )
        scores, fold_ids = walk_forward_scores(
            df,
            model_class=model_class,
            label_column=label_column,
            n_splits=folds,
            exclude=exclude,
            class_kwargs=class_kwargs,
            scale=_flag(scale),
            purge=purge,
        )
        fold_ids = fold_ids[scores.notna()].reset_index(drop=True)
        df = df.loc[scores.notna()].reset_index(drop=True)
        positions = positions_from_signals(
            scores.dropna().reset_index(drop=True),
            allow_short=_flag(allow_short),
            threshold=float(threshold),
        )
        context.log_result("wf_purge_bars", purge)
    elif mode == "model":
        estimator = _load_model(model)
        x = feature_matrix(df, estimator, exclude=[label_column, *exclude])
        positions = positions_from_signals(
            pd.Series(_model_scores(estimator, x)),
            allow_short=_flag(allow_short),
            threshold=float(threshold),
        )
    else:
        if signal_column not in df.columns:
            raise ValueError(f"the dataset has no {signal_column!r} column and no model is given")
        positions = positions_from_signals(df[signal_column], allow_short=_flag(allow_short))
    result = run_backtest(
        df[price_column],
        positions,
        fee_rate=float(fee_rate),
        periods_per_year=float(periods_per_year),
    )
    frame = result.frame
    if timestamp_column in df.columns:
        frame.insert(0, "timestamp", df[timestamp_column].to_numpy())
    context.logger.info_with(
        "backtest done",
        mode=mode,
        bars=len(frame),
        **{k: round(v, 4) for k, v in result.stats.items() if k in ("cumulative_return", "sharpe")},
    )
    context.log_results({**result.stats, "bars": len(frame)})
    if mode == "walk_forward":
        per_fold = fold_statistics(frame, fold_ids, periods_per_year=float(periods_per_year))
        context.log_dataset("walk_forward_folds", per_fold, format="csv")
        context.log_results(
            {
                "wf_folds": len(per_fold),
                "wf_positive_folds": int((per_fold["cumulative_return"] > 0).sum()),
                "wf_beat_bh_folds": int(
                    (per_fold["cumulative_return"] > per_fold["bh_cumulative_return"]).sum()
                ),
            }
        )
    context.set_label("backtest.mode", mode)
    context.log_dataset("equity_curve", frame, format="parquet")
    fig = equity_figure(frame, result.stats, title=f"backtest ({mode})")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    context.log_artifact("equity-curve", body=buf.getvalue(), kind="plot", format="png")
