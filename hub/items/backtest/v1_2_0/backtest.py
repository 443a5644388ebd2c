"""backtest 1.2.0 — a backtest a quant reads without a calculator.

Prices + signals, a logged model's P(up), or models refit walk-forward (purged as in 1.1) →
positions → gross and net equity, and every figure beside its controls. The item's files:

- ``engine.py``: costs (:class:`Costs`), strategies (threshold, no-trade band, minimum holding,
  sizing), the simulation and its statistics (the conventions are in its docstring);
- ``controls.py``: buy-and-hold, always-long-when-flat, the random-signal null;
- ``plots.py``: the PNG artifacts;
- this module: walk-forward (purged folds, shuffled-label refits, out-of-sample AUC and log
  loss beside the base rate) and the handler.

What 1.2.0 changes from 1.1.0 (whose figures it still logs under the same names):

- the book is closed at the end (the final position pays its exit cost);
- ``exposure`` is the mean |position| held over the bars that earn a return (1.1: the share of
  bars with a position, counting the last bar, which earns nothing); ``time_in_market`` is the
  share of those bars held;
- ``fees_paid`` counts every trading cost (fee, half-spread, slippage); funding apart;
- with a model (logged or walk-forward) rows out of time order are refused, not sorted.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _sibling(name: str) -> types.ModuleType:
    """Another file of this item: a sub-module when the item is a package (bundled), else
    (a cached or exported copy imported by path) loaded from beside this file."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    unique = f"{__name__}__{name}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name}.py beside {__file__}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


engine = _sibling("engine")
controls = _sibling("controls")
plots = _sibling("plots")
walkforward = _sibling("walkforward")

Costs = engine.Costs
simulate = engine.simulate
statistics = engine.statistics
strategy_positions = engine.strategy_positions
positions_from_signals = engine.positions_from_signals
round_trips = engine.round_trips
sharpe_statistics = engine.sharpe_statistics
random_paths = controls.random_paths
simulate_paths = controls.simulate_paths
null_control = controls.null_control
fee_sweep = engine.fee_sweep
infer_horizon = walkforward.infer_horizon
purged_splits = walkforward.purged_splits
walk_forward_scores = walkforward.walk_forward_scores
classification_metrics = walkforward.classification_metrics
bar_gaps = walkforward.bar_gaps
feature_matrix = walkforward.feature_matrix
model_scores = walkforward.model_scores

BASELINE_KEYS = (
    "cumulative_return",
    "gross_return",
    "annualized_return",
    "sharpe",
    "max_drawdown",
    "final_equity",
)


@dataclass
class BacktestResult:
    frame: pd.DataFrame  # the engine's columns + bh_equity, bh_net_return, alf_equity
    stats: dict[str, float] = field(default_factory=dict)


def run_backtest(
    prices: Any,
    positions: Any,
    *,
    costs: Any = None,
    periods_per_year: float = 8760.0,
    initial_capital: float = 1.0,
    close_at_end: bool = True,
) -> BacktestResult:
    """The strategy beside buy-and-hold (``bh_*``) and always-long-when-flat (``alf_*``),
    all with the same costs; ``excess_return`` = net return - buy-and-hold's."""
    costs = costs or Costs()
    kw: dict[str, Any] = {
        "costs": costs,
        "periods_per_year": periods_per_year,
        "initial_capital": initial_capital,
    }
    frame = simulate(prices, positions, close_at_end=close_at_end, **kw)
    stats = statistics(frame, **kw)
    n = len(frame)
    for prefix, pos in (("bh", np.ones(n)), ("alf", controls.long_when_flat(positions))):
        base = simulate(prices, pos, close_at_end=close_at_end, **kw)
        base_stats = statistics(base, **kw)
        stats.update({f"{prefix}_{k}": base_stats[k] for k in BASELINE_KEYS})
        frame[f"{prefix}_equity"] = base["equity"].to_numpy()
        frame[f"{prefix}_net_return"] = base["net_return"].to_numpy()
    stats["excess_return"] = stats["cumulative_return"] - stats["bh_cumulative_return"]
    return BacktestResult(frame=frame, stats=stats)


def fold_statistics(
    frame: pd.DataFrame,
    folds: pd.Series,
    *,
    periods_per_year: float,
    labels: Any = None,
    scores: Any = None,
    train_rates: Any = None,
) -> pd.DataFrame:
    """Per walk-forward fold: bars, dates, gross and net return, Sharpe, trades, buy-and-hold,
    and (with labels and scores) AUC, log loss, base rate."""
    rows = []
    for fold in sorted(set(folds.tolist())):
        mask = (folds == fold).to_numpy()
        part = frame.loc[mask]
        net = part["net_return"]
        row: dict[str, Any] = {"fold": int(fold), "bars": int(mask.sum())}
        if "timestamp" in part.columns:
            row.update(start=str(part["timestamp"].iloc[0]), end=str(part["timestamp"].iloc[-1]))
        row.update(
            gross_return=float((1.0 + part["gross_return"]).prod() - 1.0),
            cumulative_return=float((1.0 + net).prod() - 1.0),
            sharpe=sharpe_statistics(net.to_numpy(), periods_per_year)["sharpe"],
            trades=int((part["turnover"] > 0).sum()),
            bh_cumulative_return=float((1.0 + part["bh_net_return"]).prod() - 1.0),
        )
        if labels is not None and scores is not None and train_rates is not None:
            row.update(
                classification_metrics(
                    np.asarray(labels)[mask],
                    np.asarray(scores)[mask],
                    np.asarray(train_rates)[mask],
                )
            )
        rows.append(row)
    return pd.DataFrame(rows)


# --- run-context wiring -----------------------------------------------------------------------


def _targets(df: pd.DataFrame, label_column: str) -> list[str]:
    """Columns that may hold a forward return: future_return, and a label that is one."""
    out = ["future_return"]
    if label_column in df.columns and label_column != "future_return":
        values = pd.to_numeric(df[label_column], errors="coerce").dropna()
        if values.nunique() > 2:  # a return label (market_features label=return), not up/down
            out.append(label_column)
    return out


def _check_bars(context: Any, df: pd.DataFrame, timestamp_column: str, *, allow: bool) -> None:
    """A model's positions are only as good as the bar-to-bar returns they earn: refuse rows
    out of time order, and bars that skip time (or, with ``allow``, log them)."""
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


def _meta(item: Any) -> dict[str, Any]:
    """What the dataset's producer logged beside it (``targets``, ``label_horizon_bars``), or
    {} (an in-memory frame, or a plain file without an artifact record)."""
    try:
        record = getattr(item, "meta", None)
    except Exception:  # a plain path resolves no record
        return {}
    meta = getattr(record, "meta", None)
    return dict(meta) if isinstance(meta, dict) else {}


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


def _floats(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [float(v) for v in items if str(v).strip()]


def _with_prices(
    df: pd.DataFrame, prices: Any, price_column: str, timestamp_column: str
) -> pd.DataFrame:
    if price_column in df.columns:
        return df
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
    return df.merge(px, on=timestamp_column, how="inner")  # keeps the dataset's row order


def _log_png(context: Any, key: str, fig: Any) -> None:
    context.log_artifact(key, body=plots.png(fig), kind="plot", format="png")


def backtest(
    context: Any,
    dataset: Any = None,
    prices: Any = None,
    model: Any = None,
    signal_column: str = "signal",
    probability_column: str = "",
    price_column: str = "close",
    timestamp_column: str = "timestamp",
    label_column: str = "label",
    threshold: float = 0.5,
    band: float = 0.0,
    min_hold: int = 1,
    sizing: str = "unit",
    vol_target: float = 0.5,
    vol_halflife: float = 48.0,
    max_leverage: float = 1.0,
    allow_short: Any = False,
    fee_bp: float = 10.0,
    maker_fee_bp: float = 2.0,
    fill: str = "taker",
    spread_bp: float = 0.0,
    slippage_bp: float = 0.0,
    short_borrow_bp_year: float = 0.0,
    short_funding_bp_bar: float = 0.0,
    fee_rate: Any = None,
    fee_sweep_bp: Any = "0,5,10",
    periods_per_year: float = 8760.0,
    close_at_end: Any = True,
    null_paths: int = 200,
    seed: int = 0,
    shuffled_label_control: Any = True,
    walk_forward_splits: int = 0,
    model_class: str = "sklearn.linear_model.LogisticRegression",
    drop_columns: Any = "future_return",
    scale: Any = True,
    horizon: int = 0,
    allow_gaps: Any = False,
    **kwargs: Any,
) -> None:
    """Backtest ``dataset[signal_column]`` (positions), ``dataset[probability_column]``
    (P(up)), a logged ``model``'s P(up) over the dataset's features, or (``walk_forward_splits``
    > 1) models refit walk-forward with ``horizon`` bars purged before each test fold; P(up)
    becomes positions by the strategy parameters. Prices come from ``dataset[price_column]`` or
    the ``prices`` input joined on timestamp."""
    df = _frame(dataset)
    if df is None:
        raise ValueError("backtest needs a dataset input (signals or features)")
    meta = _meta(dataset)
    meta_targets = [str(c) for c in meta.get("targets") or [] if str(c) != label_column]
    class_kwargs = {k[len("CLASS_") :]: v for k, v in kwargs.items() if k.startswith("CLASS_")}
    unknown = [k for k in kwargs if not k.startswith("CLASS_")]
    if unknown:
        raise TypeError(f"unexpected parameter(s) {unknown}")
    ppy = float(periods_per_year)
    if fee_rate is not None:  # 1.1's parameter: a fraction per unit traded
        fee_bp = float(fee_rate) / engine.BP
    costs = Costs(
        fee_bp=float(fee_bp),
        maker_fee_bp=float(maker_fee_bp),
        fill=str(fill),
        spread_bp=float(spread_bp),
        slippage_bp=float(slippage_bp),
        short_borrow_bp_year=float(short_borrow_bp_year),
        short_funding_bp_bar=float(short_funding_bp_bar),
    )
    df = _with_prices(df, prices, price_column, timestamp_column)
    folds = int(walk_forward_splits)
    mode = "walk_forward" if folds > 1 else ("model" if model is not None else "signals")
    if mode == "signals" and timestamp_column in df.columns:
        df = df.sort_values(timestamp_column).reset_index(drop=True)
    else:
        df = df.reset_index(drop=True)
        _check_bars(context, df, timestamp_column, allow=_flag(allow_gaps))
    exclude = [
        c
        for c in [
            price_column,
            timestamp_column,
            signal_column,
            probability_column,
            *str(drop_columns or "").split(","),
            *meta_targets,  # forward-looking by the producer's word: never features
        ]
        if c
    ]
    volatility = engine.causal_volatility(
        df[price_column], halflife=vol_halflife, periods_per_year=ppy
    )

    def to_positions(proba: Any, rows: Any = slice(None)) -> pd.Series:
        return strategy_positions(
            np.asarray(proba, dtype=float),
            threshold=float(threshold),
            band=float(band),
            min_hold=int(min_hold),
            allow_short=_flag(allow_short),
            sizing=str(sizing),
            volatility=volatility[rows],
            vol_target=float(vol_target),
            max_leverage=float(max_leverage),
        )

    extra: dict[str, Any] = {}
    shuffled_positions = wf = shuffled = None
    if mode == "walk_forward":
        purge = int(horizon)
        if purge < 0:
            raise ValueError(f"horizon must be >= 0 bars (0: inferred), not {purge}")
        if purge == 0:
            inferred = infer_horizon(
                df, price_column=price_column, target_columns=_targets(df, label_column)
            )
            declared = int(meta.get("label_horizon_bars") or 0)
            purge = max(inferred or 1, declared)
            context.logger.info_with(
                "walk-forward purge gap",
                bars=purge,
                how="the dataset's label_horizon_bars"
                if declared == purge
                else "inferred from the target"
                if inferred
                else "assumed (no forward target)",
            )
        wf_kw: dict[str, Any] = {
            "model_class": model_class,
            "label_column": label_column,
            "n_splits": folds,
            "exclude": exclude,
            "class_kwargs": class_kwargs,
            "scale": _flag(scale),
            "purge": purge,
        }
        wf = walk_forward_scores(df, **wf_kw)
        scored = wf.scores.notna().to_numpy()
        if _flag(shuffled_label_control):
            permuted = np.random.default_rng(seed).permutation(df[label_column].to_numpy())
            shuffled = walk_forward_scores(df, labels=permuted, **wf_kw)
            shuffled_positions = to_positions(shuffled.scores[scored], scored)
        positions = to_positions(wf.scores[scored], scored)
        df = df.loc[scored].reset_index(drop=True)
        extra["wf_purge_bars"] = purge
    elif mode == "model":
        estimator = _load_model(model)
        x = feature_matrix(df, estimator, exclude=[label_column, *exclude])
        positions = to_positions(model_scores(estimator, x))
    elif probability_column:
        if probability_column not in df.columns:
            raise ValueError(f"the dataset has no {probability_column!r} column")
        positions = to_positions(df[probability_column])
    else:
        if signal_column not in df.columns:
            raise ValueError(f"the dataset has no {signal_column!r} column and no model is given")
        positions = positions_from_signals(df[signal_column], allow_short=_flag(allow_short))
    price = df[price_column].to_numpy(dtype=float)
    kw: dict[str, Any] = {"costs": costs, "periods_per_year": ppy}
    result = run_backtest(price, positions, close_at_end=_flag(close_at_end), **kw)
    frame, stats = result.frame, result.stats
    if timestamp_column in df.columns:
        frame.insert(0, "timestamp", df[timestamp_column].to_numpy())
    stats.update(fee_sweep(price, frame["position"], _floats(fee_sweep_bp), **kw))
    null = None
    if int(null_paths) > 0:  # 0 turns the control off (item.yaml), e.g. for a quick comparison
        null_stats, null = null_control(
            price,
            frame["position"],
            stats["net_return"],
            n_paths=int(null_paths),
            seed=int(seed),
            **kw,
        )
        stats.update(null_stats)
    marks = {"strategy": stats["net_return"]}
    if shuffled_positions is not None and shuffled is not None and wf is not None:
        sh = run_backtest(price, shuffled_positions, close_at_end=_flag(close_at_end), **kw).stats
        for key in ("net_return", "gross_return", "sharpe", "trades", "max_drawdown"):
            stats[f"shuffled_{key}"] = sh[key]
        labels = df[label_column].to_numpy()
        sm = classification_metrics(labels, shuffled.scores.dropna(), shuffled.train_rates.dropna())
        stats.update({"shuffled_auc": sm["auc"], "shuffled_log_loss": sm["log_loss"]})
        marks["shuffled labels (own trades)"] = sh["net_return"]
    if wf is not None:
        fold_ids = wf.folds[wf.scores.notna()].reset_index(drop=True)
        scores = wf.scores.dropna().to_numpy()
        rates = wf.train_rates.dropna().to_numpy()
        labels = df[label_column].to_numpy()
        stats.update(
            {f"oos_{k}": v for k, v in classification_metrics(labels, scores, rates).items()}
        )
        per_fold = fold_statistics(
            frame,
            fold_ids,
            periods_per_year=ppy,
            labels=labels,
            scores=scores,
            train_rates=rates,
        )
        stats.update(
            {
                "wf_folds": len(per_fold),
                "wf_positive_folds": int((per_fold["cumulative_return"] > 0).sum()),
                "wf_beat_bh_folds": int(
                    (per_fold["cumulative_return"] > per_fold["bh_cumulative_return"]).sum()
                ),
            }
        )
        context.log_dataset("walk_forward_folds", per_fold, format="csv")
        context.log_dataset(
            "predictions",
            pd.DataFrame({"timestamp": frame.get("timestamp"), "fold": fold_ids, "p_up": scores}),
            format="csv",
        )
        _log_png(context, "walk-forward-folds", plots.folds_figure(frame, fold_ids))
    stats.update(extra)
    context.logger.info_with(
        "backtest done",
        mode=mode,
        bars=len(frame),
        **{k: round(float(stats[k]), 4) for k in ("gross_return", "net_return", "sharpe")},
    )
    context.log_results({**stats, "bars": len(frame)})
    context.set_label("backtest.mode", mode)
    context.log_dataset("equity_curve", frame, format="parquet")
    context.log_dataset("trade_list", round_trips(frame, costs), format="csv")
    _log_png(context, "equity-curve", plots.equity_figure(frame, stats))
    if null is not None:
        context.log_dataset("null_distribution", null, format="csv")
        _log_png(
            context, "null-distribution", plots.null_figure(null, marks, stats["null_percentile"])
        )
