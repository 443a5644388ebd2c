"""The hub's part of ``make demo``: raw hourly BTCUSDT bars → features → a trained model → a
purged walk-forward backtest read against its costs and controls → the model served over HTTP
and invoked, all through versioned ``hub://`` items.

What the backtest shows, and why: a next-hour model trades often, so its result is mostly
what it pays. The demo therefore prints gross beside net, the same positions at 0 / 5 / 10 bp,
a cost-aware variant (no-trade band + minimum holding, fixed in advance, not tuned on these
folds) beside the naive one, the controls (buy-and-hold, random signals with the same trades,
the same pipeline on shuffled labels), the forecasts' AUC and log loss beside the base rate,
and one sentence derived from those numbers.

``python -m tickrun.hub.demo`` runs it alone; ``tickrun.demo`` calls :func:`run_demo`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FEES_BP = (0, 5, 10)
FEE_BP = 10.0  # the headline cost: a retail taker fee on Binance spot
COST_AWARE = {"band": 0.05, "min_hold": 24}  # enter beyond P(up) 0.55 / 0.45, hold a day


def _say(text: str) -> None:
    print(text, flush=True)


def _pct(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{float(value):+.{digits}%}"


def _row(label: str, *cells: str) -> str:
    return f"   {label:<30}" + "".join(f"{c:>16}" for c in cells)


def _share(percentile: Any) -> str:
    return "all" if float(percentile) >= 100 else f"{float(percentile):.0f}% of"


def verdict(naive: Mapping[str, Any], aware: Mapping[str, Any], *, fee_bp: float = FEE_BP) -> str:
    """One plain sentence from the numbers: is there an edge before costs (forecasts better
    than chance and timing better than random signals with the same trades), does it survive
    the fee, does it beat buy-and-hold."""
    auc, shuffled_auc = float(naive["oos_auc"]), float(naive.get("shuffled_auc") or 0.5)
    p_value = float(naive["null_p_value"])
    edge = auc > max(0.5, shuffled_auc) and p_value <= 0.05
    if edge:
        first = (
            f"Before costs the model has a small real edge (out-of-sample AUC {auc:.3f} vs "
            f"{shuffled_auc:.3f} on shuffled labels; gross {_pct(naive['gross_return'], 0)}, "
            f"timing better than {_share(naive['null_percentile'])} random signals with "
            "the same trades)"
        )
    else:
        first = (
            f"The model shows no reliable edge even before costs (AUC {auc:.3f}, shuffled "
            f"labels {shuffled_auc:.3f}; its timing ranks at the {naive['null_percentile']:.0f}"
            "th percentile of random signals with the same trades)"
        )
    runs = {"naive": naive, "cost-aware": aware}
    name, best = max(runs.items(), key=lambda kv: float(kv[1]["net_return"]))
    bh = float(naive["bh_cumulative_return"])
    net = float(best["net_return"])
    sure = float(best.get("psr") or 0.0) >= 0.95
    odds = f"Sharpe {float(best['sharpe']):.2f} ± {float(best['sharpe_se']):.2f}" + (
        "" if sure else ", not distinguishable from zero"
    )
    if net > 0 and net > bh:
        second = (
            f"and it survives {fee_bp:g} bp fees: the {name} strategy nets {_pct(net, 0)} "
            f"({odds}), above buy-and-hold's {_pct(bh, 0)}"
        )
    elif net > 0:
        second = (
            f"{'and' if edge else 'yet'} only the {name} strategy stays positive after "
            f"{fee_bp:g} bp fees, at {_pct(net, 0)} ({odds}), below buy-and-hold's "
            f"{_pct(bh, 0)}"
        )
    else:
        second = (
            f"{'but it does' if edge else 'and it does'} not survive {fee_bp:g} bp fees: naive "
            f"nets {_pct(naive['net_return'], 0)} (break-even "
            f"{float(naive['break_even_fee_bp']):.1f} bp per side), cost-aware "
            f"{_pct(aware['net_return'], 0)} (break-even "
            f"{float(aware['break_even_fee_bp']):.1f} bp), while buy-and-hold made {_pct(bh, 0)}"
        )
    return f"{first}, {second}."


def _table(naive: Mapping[str, Any], aware: Mapping[str, Any]) -> list[str]:
    def both(fmt: Any, key: str) -> tuple[str, str]:
        return fmt(naive.get(key)), fmt(aware.get(key))

    def num(digits: int) -> Any:
        return lambda v: "n/a" if v is None else f"{float(v):.{digits}f}"

    def sharpe(r: Mapping[str, Any]) -> str:
        return f"{float(r['sharpe']):.2f} ± {float(r['sharpe_se']):.2f}"

    def null(r: Mapping[str, Any]) -> str:
        return f"{r['null_percentile']:.0f}th (p {r['null_p_value']:.2f})"

    def sweep(fee: int) -> str:
        what = "gross" if fee == 0 else "net" if fee == FEE_BP else ""
        return f"return @ {fee} bp/side" + (f" ({what})" if what else "")

    return [
        _row("", "naive P(up)>0.5", "cost-aware"),
        *[_row(sweep(fee), *both(_pct, f"fee_{fee}bp_net_return")) for fee in FEES_BP],
        _row("fee drag (gross - net)", *both(lambda v: f"{float(v) * 100:.0f} pts", "fee_drag")),
        _row("net Sharpe ± SE", sharpe(naive), sharpe(aware)),
        _row("P(true Sharpe > 0)", *both(num(2), "psr")),
        _row("max drawdown", *both(lambda v: f"{float(v):.0%}", "max_drawdown")),
        _row("position changes", *both(lambda v: f"{int(v):,}", "trades")),
        _row("avg holding (bars)", *both(num(1), "avg_holding_bars")),
        _row("round-trip win rate", *both(lambda v: f"{float(v):.0%}", "win_rate")),
        _row("break-even fee (bp/side)", *both(num(1), "break_even_fee_bp")),
        _row("random signals, same trades", null(naive), null(aware)),
        _row("shuffled-label model (net)", *both(_pct, "shuffled_net_return")),
        _row("buy & hold (net)", *both(_pct, "bh_cumulative_return")),
    ]


def run_demo(
    *,
    rows: int = 20_000,
    data: Path | None = None,
    model_class: str = "xgboost.XGBClassifier",
    folds: int = 4,
) -> dict[str, Any]:
    """Run the pipeline as tracked runs (in ``$TICKRUN_HOME`` / ``$TICKRUN_ARTIFACT_PATH``);
    returns the URIs and figures it printed."""
    import pandas as pd

    from tickrun.functions.runs import TrackingSettings

    from .resolver import import_function

    if data is None:
        from tickrun.hub.sampledata import market_data

        data = market_data()
    workdir = Path(tempfile.mkdtemp(prefix="tickrun-hub-demo-"))
    bars_path = workdir / "btcusdt_1h.csv"
    pd.read_csv(data).iloc[-rows:].to_csv(bars_path, index=False)
    _say(f"hub demo: last {rows:,} hourly BTCUSDT bars from {data}")

    features_fn = import_function("hub://market_features:1")
    _say(f"1. {features_fn.uri}: causal features + next-hour up/down label")
    features = features_fn.run(inputs={"dataset": str(bars_path)}, progress=False)
    features.raise_for_state()
    _say(f"   {features.results['rows']:,} rows x {features.results['feature_count']} features")

    estimator: dict[str, Any] = {"model_class": model_class}
    if model_class.startswith("xgboost"):
        estimator.update(CLASS_n_estimators=200, CLASS_max_depth=3, CLASS_learning_rate=0.05)
    else:
        estimator["scale"] = True
    trainer = import_function("hub://auto_trainer:1")
    _say(f"2. {trainer.uri}: {model_class}, time-ordered split (the model served in step 4)")
    train = trainer.run(
        "train",
        params={**estimator, "drop_columns": "future_return", "time_ordered": True},
        inputs={"dataset": features.outputs["features"]},
        progress=False,
    )
    train.raise_for_state()
    t = train.results
    metrics = {
        k: round(float(t[k]), 4)
        for k in ("auc", "log_loss", "base_rate", "baseline_log_loss", "accuracy")
        if t.get(k) is not None
    }
    if "baseline_log_loss" in metrics:  # auto_trainer >= 1.1 reports the baselines
        _say(
            f"   test set (last 20%): AUC {metrics['auc']:.3f}, log loss {metrics['log_loss']:.4f}"
            f" vs {metrics['baseline_log_loss']:.4f} for the base rate "
            f"({metrics['base_rate']:.1%} up), accuracy {metrics['accuracy']:.1%}"
        )
    else:
        _say(f"   test set (last 20%): {json.dumps(metrics)}")

    backtest_fn = import_function("hub://backtest:1")
    _say(
        f"3. {backtest_fn.uri}: purged walk-forward, {folds} folds, {model_class} refit per "
        f"fold; {FEE_BP:g} bp taker fee, closed at the end; naive vs cost-aware "
        f"(band {COST_AWARE['band']}, hold {COST_AWARE['min_hold']} bars, fixed in advance)"
    )
    common: dict[str, Any] = {
        **estimator,
        "walk_forward_splits": folds,
        "fee_bp": FEE_BP,
        "fee_sweep_bp": ",".join(str(f) for f in FEES_BP),
    }
    inputs = {"dataset": features.outputs["features"], "prices": str(bars_path)}
    runs = {}
    for name, extra in (("naive", {}), ("cost-aware", COST_AWARE)):
        run = backtest_fn.run(params={**common, **extra}, inputs=inputs, progress=False)
        run.raise_for_state()
        runs[name] = run
    naive, aware = runs["naive"].results, runs["cost-aware"].results
    per_fold = runs["naive"].artifact("walk_forward_folds").as_df()
    _say(
        f"   out of sample: {len(per_fold)} folds x {int(per_fold['bars'].iloc[0]):,} bars, "
        f"{str(per_fold['start'].iloc[0])[:10]} → {str(per_fold['end'].iloc[-1])[:10]}, "
        f"{naive['wf_purge_bars']} bar(s) purged before each"
    )
    _say(
        f"   forecasts: AUC {naive['oos_auc']:.3f} (shuffled labels "
        f"{naive['shuffled_auc']:.3f}), log loss {naive['oos_log_loss']:.4f} vs "
        f"{naive['oos_baseline_log_loss']:.4f} for the base rate ({naive['oos_base_rate']:.1%} up)"
    )
    for line in _table(naive, aware):
        _say(line)
    _say(
        "   naive net per fold: "
        + ", ".join(
            f"{r.fold}: {r.cumulative_return:+.0%} (gross {r.gross_return:+.0%}, AUC {r.auc:.3f})"
            for r in per_fold.itertuples()
        )
    )
    plot = runs["naive"].artifact("equity-curve").local()
    _say(f"   plots: {plot}")
    _say(f"          {runs['cost-aware'].artifact('equity-curve').local()}")
    _say(f"          {runs['naive'].artifact('null-distribution').local()}")
    sentence = verdict(naive, aware)
    _say(f"   => {sentence}")

    server_fn = import_function("hub://model_server:1")
    _say(f"4. {server_fn.uri}: serving {train.outputs['model']}")
    test_set = train.artifact("test_set").as_df()
    feature_names = [
        c for c in test_set.columns if c not in ("timestamp", "label", "future_return")
    ]
    row = test_set[feature_names].iloc[-1]
    with server_fn.deploy(
        env={"MODEL_URI": str(train.outputs["model"])}, directory=workdir / "model-server"
    ) as server:
        mlflow_reply = server.invoke(
            {"dataframe_split": {"columns": feature_names, "data": [row.tolist()]}},
            path="/invocations",
        )
        nuclio_reply = server.invoke({"inputs": [row.to_dict()], "proba": True})
        _say(f"   POST {server.url}/invocations → {json.dumps(mlflow_reply)}")
        _say(
            f"   POST {server.url}/ → outputs {nuclio_reply['outputs']}, "
            f"P(up) {nuclio_reply['probabilities'][0][-1]:.3f}"
        )

    where = TrackingSettings.from_env().artifact_path
    _say(
        f"artifacts under {where}/default/: features {features.uid}, model {train.uid}, "
        f"backtests {runs['naive'].uid} (naive), {runs['cost-aware'].uid} (cost-aware)"
    )
    keys = (
        "gross_return",
        "net_return",
        "cumulative_return",
        "sharpe",
        "sharpe_se",
        "psr",
        "max_drawdown",
        "trades",
        "break_even_fee_bp",
        "null_percentile",
        "null_p_value",
        "shuffled_net_return",
        "shuffled_auc",
        "bh_cumulative_return",
        "oos_auc",
        "oos_log_loss",
        "oos_baseline_log_loss",
        "oos_base_rate",
        *(f"fee_{fee}bp_net_return" for fee in FEES_BP),
    )
    return {
        "features": features.outputs["features"],
        "model": train.outputs["model"],
        "metrics": metrics,
        "backtest": {k: naive.get(k) for k in keys},
        "cost_aware": {k: aware.get(k) for k in keys},
        "verdict": sentence,
        "plot": plot,
        "prediction": mlflow_reply["predictions"],
        "artifact_path": where,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--model-class", default="xgboost.XGBClassifier")
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    run_demo(rows=args.rows, model_class=args.model_class, folds=args.folds)


if __name__ == "__main__":
    main()
