"""model_monitor 1.1.0 — drift, prediction drift and live performance of a served model, as a
tracked run, with alerts.

The ``monitor`` job compares a current window of prediction records (a table, a Kafka topic of
model_server-style records, or model_server's JSONL directory ``predictions_dir``) with the
reference (training) features dataset, given or found from a registered model
(``model="models:/btc@champion"``: the dataset input in the version's lineage):

- per-feature PSI and KS (``drift.py``: quantile bins of the reference, epsilon 1e-4 for empty
  bins, KS at ``ks_alpha / m`` — Bonferroni over the m features — on AR(1) effective sample
  sizes by default, and the ``drift_rule``); the defaults (PSI 0.25, KS on effective sizes,
  2 drifted features to alert) are for an hourly schedule over autocorrelated hourly features;
  see item.yaml for the measurements behind them;
- prediction drift: PSI/KS of the model output against reference predictions when given
  (``reference_predictions``, or a ``probability``/``prediction`` column of the reference),
  else the PSI between the reference label's base rate and the current mean output;
- live performance once outcomes are known (``performance.py``): for a market model, the
  next bar's return of the window's ``close`` gives hit rate and PnL gross and net of
  ``fee_bp``; with labels (a label column, else the market outcome) AUC, log loss, accuracy;
- results, the per-feature table (dataset ``drift``), a PSI bar chart with the threshold line
  (``psi-chart``) and reference-vs-current histograms of the most drifted features
  (``drift-histograms``), as PNGs;
- an alert when a threshold is crossed: to the log (default), a webhook (POST JSON with a
  timeout; a failure is logged and reported, never raised) and/or a Kafka topic; and, with
  ``retrain="hub://item:version#handler"``, a retraining run of that hub item started from
  the job (``tickrun.import_function(uri).run(...)``); ``retrain_recommended`` is logged
  either way.

The item's files (item.yaml ``files:``): ``drift.py`` (PSI, KS, the per-feature table),
``performance.py`` (outcomes, positions, hit rate, PnL, AUC), ``sources.py`` (the Kafka source,
the webhook and topic alerts), ``plots.py`` (the PNGs); this module wires them to the run
context.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


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


drift = _sibling("drift")
performance = _sibling("performance")
sources = _sibling("sources")
plots_ = _sibling("plots")

PSI_EPSILON = drift.PSI_EPSILON
psi = drift.psi
ks = drift.ks
feature_drift = drift.feature_drift
next_returns = performance.next_returns
positions = performance.positions
trading = performance.trading
records_frame = sources.records_frame
post_webhook = sources.post_webhook

TIME_NAMES = ("timestamp", "open_time", "time", "datetime", "date")
OUTPUT_NAMES = ("probability", "prediction", "signal", "model_version", "latency_ms", "request_id")
KNOWN_TARGETS = ("label", "future_return")
FORWARD_PREFIXES = ("future_", "fwd_", "forward_")


def _frame(item: Any) -> pd.DataFrame:
    return item.as_df() if hasattr(item, "as_df") else pd.DataFrame(item)


def _meta(item: Any) -> dict[str, Any]:
    """The metadata its producer logged with a dataset (market_features 1.2: targets,
    time_column, label_horizon_bars), or {}."""
    meta = getattr(getattr(item, "meta", None), "meta", None)
    return dict(meta) if isinstance(meta, Mapping) else {}


def _names(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def time_column_of(frame: pd.DataFrame, given: str | None, meta: Mapping[str, Any]) -> str | None:
    for name in (given, meta.get("time_column"), *TIME_NAMES):
        if name and name in frame.columns:
            return str(name)
    return None


def select_features(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Any = None,
    *,
    label_column: str | None = "label",
    meta: Mapping[str, Any] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """The features to compare: ``features`` when given (each must be in both tables), else
    the numeric columns of the reference also in the current window, less targets (the label,
    market_features' targets, metadata ``targets``, forward-named columns), time columns, model
    outputs and ``exclude``."""
    given = _names(features)
    if given:
        missing = [f for f in given if f not in reference.columns or f not in current.columns]
        if missing:
            raise ValueError(f"feature(s) {missing} not in both the reference and the window")
        return given
    meta = meta or {}
    skip = {
        *KNOWN_TARGETS,
        *TIME_NAMES,
        *OUTPUT_NAMES,
        *_names(meta.get("targets")),
        *([label_column] if label_column else []),
        *([meta["time_column"]] if meta.get("time_column") else []),
        *exclude,
    }
    chosen = [
        str(c)
        for c in reference.columns
        if c in current.columns
        and str(c) not in skip
        and not str(c).lower().startswith(FORWARD_PREFIXES)
        and not str(c).startswith("predicted_")
        and pd.api.types.is_numeric_dtype(reference[c])
        and not pd.api.types.is_bool_dtype(reference[c])
    ]
    if not chosen:
        raise ValueError(
            "no numeric feature column in both the reference and the window "
            f"(reference: {list(reference.columns)}, window: {list(current.columns)})"
        )
    return chosen


def prediction_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    label_column: str | None,
    bins: int,
    epsilon: float,
    threshold: float,
    ks_alpha: float,
    rule: str,
) -> dict[str, Any]:
    """prediction_psi (and prediction_ks_pvalue against reference predictions), the method
    (``reference_predictions`` or ``base_rate``), prediction_drift; {} without model output."""
    out = performance.output_column(current)
    if out is None:
        return {}
    cur = drift.finite(current[out])
    res: dict[str, Any] = {"prediction_column": out, "prediction_mean": float(cur.mean())}
    if out in reference.columns and reference[out].notna().any():
        ref = drift.finite(reference[out])
        value = drift.psi(ref, cur, bins, epsilon)
        stat, pvalue = drift.ks(ref, cur)
        res.update(
            prediction_drift_method="reference_predictions",
            prediction_psi=value,
            prediction_ks_statistic=stat,
            prediction_ks_pvalue=pvalue,
            prediction_drift=drift.decide(value >= threshold, pvalue < ks_alpha, rule),
        )
    elif label_column and label_column in reference.columns:
        base = float(drift.finite(reference[label_column]).mean())
        rate = float(cur.mean()) if out == "probability" else float((cur > 0.5).mean())
        value = drift.bernoulli_psi(base, rate, epsilon)
        res.update(
            prediction_drift_method="base_rate",
            reference_base_rate=base,
            prediction_psi=value,
            prediction_drift=value >= threshold,
        )
    return res


def live_performance(
    current: pd.DataFrame,
    *,
    price_column: str,
    time_name: str | None,
    label_column: str | None,
    fee_bp: float,
    short: bool,
    threshold: float,
) -> dict[str, Any]:
    """Hit rate and PnL from the window's prices, AUC/log loss/accuracy from labels (a label
    column, else the market outcome)."""
    res: dict[str, Any] = {}
    returns = None
    if price_column in current.columns:
        times = current[time_name] if time_name else None
        returns = performance.next_returns(current[price_column], times)
        pos = performance.positions(current, short=short, threshold=threshold)
        if pos is not None:
            res.update(performance.trading(pos, returns, fee_bp))
    labels = None
    if label_column and label_column in current.columns and current[label_column].notna().any():
        labels = current[label_column].to_numpy(dtype=np.float64)
        res["label_source"] = label_column
    elif returns is not None:
        labels = np.where(np.isfinite(returns), (returns > 0).astype(np.float64), np.nan)
        res["label_source"] = f"next {price_column} return > 0"
    if labels is not None and performance.output_column(current) is not None:
        res.update(performance.classification(current, labels, threshold))
    return res


def _plain(value: Any) -> Any:
    """A JSON-safe result: NaN/inf → None, numpy scalars → Python."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def start_retraining(
    uri: str,
    params: Mapping[str, Any] | None,
    inputs: Mapping[str, Any] | None,
    runner: str,
) -> dict[str, Any]:
    """Run the hub item ``uri`` (``hub://name:version#handler``) as its own tracked run and
    wait for it: {retrain_run, retrain_state}; a failure to start is {retrain_error}."""
    from tickrun.hub import import_function

    handler = None
    base = uri
    if "#" in uri:
        base, handler = uri.split("#", 1)
    try:
        run = import_function(base).run(
            handler or None,
            params=dict(params or {}),
            inputs=dict(inputs or {}),
            runner=runner,
            labels={"triggered-by": "model_monitor"},
            progress=False,
        )
    except Exception as err:  # the results stand without the retrain
        logger.warning("retraining %s did not start: %s", uri, err)
        return {"retrain_error": f"{type(err).__name__}: {err}"}
    return {"retrain_run": str(run.uid), "retrain_state": str(run.state)}


def reference_from_model(model: str) -> tuple[Any, str]:
    """The training dataset of a registered model version (``models:/name@alias`` or
    ``models:/name/3``): its lineage's dataset inputs, the one logged as a dataset artifact
    and named like a training set first. (the DataItem, its URI)."""
    from tickrun.functions.runs import DataItem
    from tickrun.functions.runs.registry import get_model_version

    mv = get_model_version(model)
    found = list(mv.lineage.datasets)
    if not found:
        raise ValueError(f"{model} (run {mv.lineage.run_uid}) has no dataset inputs in its lineage")
    preferred = ("dataset", "train", "training_set", "features", "train_set")

    def rank(d: Any) -> tuple[int, int]:
        name = d.name if d.name in preferred else None
        return (0 if d.kind == "dataset" else 1, preferred.index(name) if name else len(preferred))

    chosen = sorted(found, key=rank)[0]
    return DataItem(chosen.uri), chosen.uri


def monitor(
    context: Any,
    reference: Any = None,
    current: Any = None,
    topic: str | None = None,
    brokers: str | None = None,
    predictions_dir: str | None = None,
    model: str | None = None,
    last_rows: int | None = None,
    ks_autocorrelation: bool = True,
    reference_predictions: Any = None,
    features: Any = None,
    label_column: str | None = "label",
    time_column: str | None = None,
    price_column: str = "close",
    model_version: str | None = None,
    bins: int = 10,
    epsilon: float = PSI_EPSILON,
    psi_threshold: float = 0.25,
    ks_alpha: float = 0.01,
    correction: str = "bonferroni",
    drift_rule: str = "both",
    min_drifted_features: int = 2,
    prediction_psi_threshold: float | None = None,
    min_hit_rate: float | None = None,
    fee_bp: float = 10.0,
    short: bool = False,
    threshold: float = 0.5,
    alert_log: bool = True,
    alert_webhook: str | None = None,
    webhook_timeout_s: float = 5.0,
    alert_topic: str | None = None,
    alert_brokers: str | None = None,
    retrain: str | None = None,
    retrain_params: Mapping[str, Any] | None = None,
    retrain_inputs: Mapping[str, Any] | None = None,
    retrain_runner: str = "local",
    plots: bool = True,
    top_plots: int = 4,
    timeout_s: float = 30.0,
) -> None:
    """Job: drift of ``current`` (or the ``topic``'s records) vs ``reference``, prediction
    drift, live performance → results, the ``drift`` table, plots and alerts."""
    reference_source = "reference"
    if reference is None and model:
        reference, reference_source = reference_from_model(model)
    if reference is None:
        raise ValueError("give the reference (training features) dataset, or model=models:/…")
    ref = _frame(reference)
    meta = _meta(reference)
    if current is not None:
        cur = _frame(current)
        source = str(getattr(current, "url", "table"))
    elif topic:
        env = os.environ.get("TICKRUN_KAFKA_BROKERS")
        found = sources.broker_list(brokers, env)
        if not found:
            raise ValueError("give brokers= or set TICKRUN_KAFKA_BROKERS to read the topic")
        cur = sources.records_frame(sources.read_predictions(found, topic, float(timeout_s)))
        source = f"kafka:{topic}"
    elif predictions_dir:
        cur = sources.records_frame(sources.read_jsonl_dir(predictions_dir))
        source = f"jsonl:{predictions_dir}"
    else:
        raise ValueError(
            "give the current window: a dataset (current=), a topic (topic=) or "
            "model_server's MONITOR_DIR (predictions_dir=)"
        )
    if model_version is not None and "model_version" in cur.columns:
        cur = cur[cur["model_version"].astype(str) == str(model_version)]
    if cur.empty:
        raise ValueError(f"the current window ({source}) has no rows")
    time_name = time_column_of(cur, time_column, meta)
    if time_name is not None:
        cur = cur.sort_values(time_name, kind="stable").reset_index(drop=True)
    if last_rows:
        cur = cur.iloc[-int(last_rows) :].reset_index(drop=True)
    names = select_features(
        ref, cur, features, label_column=label_column, meta=meta, exclude=[price_column]
    )
    table = drift.feature_drift(
        ref,
        cur,
        names,
        bins=int(bins),
        epsilon=float(epsilon),
        psi_threshold=float(psi_threshold),
        ks_alpha=float(ks_alpha),
        correction=correction,
        rule=drift_rule,
        autocorrelation=bool(ks_autocorrelation),
    )
    drifted = list(table.loc[table["drifted"], "feature"])
    ref_out = _frame(reference_predictions) if reference_predictions is not None else ref
    pred = prediction_drift(
        ref_out,
        cur,
        label_column=label_column,
        bins=int(bins),
        epsilon=float(epsilon),
        threshold=float(
            psi_threshold if prediction_psi_threshold is None else prediction_psi_threshold
        ),
        ks_alpha=float(ks_alpha),
        rule=drift_rule,
    )
    perf = live_performance(
        cur,
        price_column=price_column,
        time_name=time_name,
        label_column=label_column,
        fee_bp=float(fee_bp),
        short=bool(short),
        threshold=float(threshold),
    )
    reasons: list[str] = []
    if len(drifted) >= int(min_drifted_features):
        reasons.append(f"{len(drifted)} drifted feature(s): {', '.join(drifted)}")
    if pred.get("prediction_drift"):
        reasons.append(f"prediction drift (PSI {pred['prediction_psi']:.3f})")
    hit = perf.get("hit_rate")
    if min_hit_rate is not None and hit is not None and math.isfinite(hit) and hit < min_hit_rate:
        reasons.append(f"hit rate {hit:.3f} < {min_hit_rate}")
    alert = bool(reasons)
    results: dict[str, Any] = {
        "source": source,
        "reference": reference_source
        if model
        else str(getattr(reference, "url", "") or "reference"),
        "reference_rows": len(ref),
        "current_rows": len(cur),
        "features_checked": len(names),
        "drifted_features": drifted,
        "drifted_count": len(drifted),
        "max_psi": float(table["psi"].max()),
        "max_psi_feature": str(table["feature"].iloc[0]),
        "min_ks_pvalue": float(table["ks_pvalue"].min()),
        "ks_level": float(table["ks_level"].iloc[0]),
        "prediction_psi": None,
        "hit_rate": None,
        "pnl_net": None,
        **pred,
        **perf,
        "alert": alert,
        "alert_reasons": reasons,
        "retrain_recommended": alert,
    }
    if time_name is not None:
        results["window_start"] = str(cur[time_name].iloc[0])
        results["window_end"] = str(cur[time_name].iloc[-1])
    if alert:
        results.update(
            _send_alerts(
                context,
                {**results, "run": getattr(context, "uid", None), "type": "model_monitor.alert"},
                log=bool(alert_log),
                webhook=alert_webhook,
                webhook_timeout_s=float(webhook_timeout_s),
                topic=alert_topic,
                brokers=alert_brokers or brokers,
            )
        )
        if retrain:
            results.update(
                start_retraining(retrain, retrain_params, retrain_inputs, retrain_runner)
            )
    context.log_results({k: _plain(v) for k, v in results.items()})
    context.log_dataset("drift", table, format="csv")
    if plots and not table.empty:
        plots_.log_figures(
            context,
            plots_.figures(table, ref, cur, psi_threshold=float(psi_threshold), top=top_plots),
        )


def _send_alerts(
    context: Any,
    payload: dict[str, Any],
    *,
    log: bool,
    webhook: str | None,
    webhook_timeout_s: float,
    topic: str | None,
    brokers: str | None,
) -> dict[str, Any]:
    """Deliver the alert to each configured channel; what happened, as results."""
    body = {k: _plain(v) for k, v in payload.items()}
    out: dict[str, Any] = {}
    if log:
        context.logger.warn_with("model monitor alert", reasons=body["alert_reasons"])
        logger.warning("model monitor alert: %s", "; ".join(body["alert_reasons"]))
    if webhook:
        ok, detail = sources.post_webhook(webhook, body, webhook_timeout_s)
        out.update(alert_webhook_delivered=ok, alert_webhook_detail=detail)
        if not ok:
            context.logger.warn_with("alert webhook failed", url=webhook, detail=detail)
    if topic:
        found = sources.broker_list(brokers, os.environ.get("TICKRUN_KAFKA_BROKERS"))
        ok, detail = (
            sources.publish(found, topic, body) if found else (False, "no brokers configured")
        )
        out.update(alert_topic_delivered=ok, alert_topic_detail=detail)
        if not ok:
            context.logger.warn_with("alert topic failed", topic=topic, detail=detail)
    return out
