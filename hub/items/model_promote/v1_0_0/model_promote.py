"""model_promote 1.0.0 — promote a challenger only when it beats the champion, as a run.

The comparison and its outcome are the run's results (both versions, both metric values, the
improvement, ``promoted`` and the reason), so every alias move has a record of why it moved.
"""

from __future__ import annotations

import math
from typing import Any

BACKTEST = "hub://backtest:1.2.0"
BACKTEST_PREFIX = "backtest."


def _run_db(context: Any) -> Any:
    """The run DB this job is tracked in, so the aliases read and moved are that DB's (None:
    the registry opens the configured one, e.g. when called outside a run)."""
    db = getattr(context, "db", None)
    if db is None:
        db = getattr(getattr(context, "_tracker", None), "db", None)
    return db


def _version(name: str, alias: str, db: Any) -> Any:
    """The version ``alias`` names, or None when the alias is not set."""
    from tickrun.functions.errors import NotFoundError
    from tickrun.functions.runs import get_model_version

    try:
        return get_model_version(name, alias, db=db)
    except NotFoundError:
        return None


class _Capture:
    """A run context for the backtest handler: keeps its results, drops its artifacts (the
    promotion run logs the figures it compared, not two backtests' worth of plots)."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.results: dict[str, Any] = {}

    def log_result(self, key: str, value: Any) -> None:
        self.results[key] = value

    def log_results(self, values: dict[str, Any]) -> None:
        self.results.update(values)

    def set_label(self, key: str, value: Any) -> None:
        pass

    def log_dataset(self, key: str, df: Any, **kw: Any) -> None:
        pass

    def log_artifact(self, key: str, body: Any = None, **kw: Any) -> None:
        pass


def _backtest_metric(
    context: Any, version: Any, key: str, data: tuple[Any, Any], db: Any, options: dict[str, Any]
) -> float:
    dataset, prices = data
    if dataset is None:
        raise ValueError(f"metric {BACKTEST_PREFIX}{key} needs a dataset input (features)")
    from tickrun.functions.runs import load_model
    from tickrun.hub import import_function

    handler = import_function(BACKTEST).handler("backtest")
    # One null path: the null control is not compared (backtest 1.2.0 fails with 0 paths).
    kw: dict[str, Any] = {"null_paths": 1, "fee_sweep_bp": "", **options}
    if int(kw.get("walk_forward_splits") or 0) > 1:
        # The version's estimator, refit on each purged training window: the same recipe
        # judged on bars it never saw, whatever window the registered fit came from.
        params = dict(version.lineage.params)
        if not params.get("model_class"):
            raise ValueError(f"{version.uri} has no model_class in its lineage params")
        kw["model_class"] = params["model_class"]
        kw["scale"] = params.get("scale", True)
        kw.update({k: v for k, v in params.items() if k.startswith("CLASS_")})
        kw["shuffled_label_control"] = False
    else:
        kw["model"], _ = load_model(version.uri, db=db)  # loaded against this job's DB
    capture = _Capture(context.logger)
    handler(capture, dataset=dataset, prices=prices, **kw)
    if key not in capture.results:
        raise ValueError(f"backtest has no result {key!r}; it reports {sorted(capture.results)}")
    return float(capture.results[key])


def _metric(
    context: Any, version: Any, metric: str, data: tuple[Any, Any], db: Any, options: dict[str, Any]
) -> float:
    if metric.startswith(BACKTEST_PREFIX):
        value = _backtest_metric(
            context, version, metric[len(BACKTEST_PREFIX) :], data, db, options
        )
    elif metric in version.metrics:
        value = float(version.metrics[metric])
    else:
        raise ValueError(
            f"{version.uri} logged no metric {metric!r} (it has {sorted(version.metrics)}); "
            f"or use {BACKTEST_PREFIX}<result>"
        )
    if not math.isfinite(value):
        raise ValueError(f"{metric} of {version.uri} is {value}: nothing to compare")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def promote(
    context: Any,
    model: str = "",
    challenger: str = "challenger",
    champion: str = "champion",
    metric: str = "backtest.net_return",
    direction: str = "max",
    min_improvement: float = 0.0,
    dataset: Any = None,
    prices: Any = None,
    previous_alias: str = "previous-champion",
    walk_forward_splits: int = 0,
    fee_bp: float = 10.0,
    maker_fee_bp: float = 2.0,
    fill: str = "taker",
    spread_bp: float = 0.0,
    slippage_bp: float = 0.0,
    threshold: float = 0.5,
    allow_short: Any = False,
    periods_per_year: float = 8760.0,
    allow_gaps: Any = False,
) -> None:
    """Move ``models:/<model>@<champion>`` to the challenger's version when the challenger's
    ``metric`` beats the champion's by more than ``min_improvement`` (see item.yaml)."""
    from tickrun.functions.runs import set_alias

    if not model:
        raise ValueError("model (a registered model name) is required")
    if direction not in ("max", "min"):
        raise ValueError(f"direction is max or min, not {direction!r}")
    if challenger == champion:
        raise ValueError(f"challenger and champion are the same alias {champion!r}")
    margin = float(min_improvement)
    if margin < 0:
        raise ValueError(f"min_improvement must be >= 0, not {margin}")
    db = _run_db(context)
    options: dict[str, Any] = {
        "walk_forward_splits": int(walk_forward_splits),
        "fee_bp": float(fee_bp),
        "maker_fee_bp": float(maker_fee_bp),
        "fill": str(fill),
        "spread_bp": float(spread_bp),
        "slippage_bp": float(slippage_bp),
        "threshold": float(threshold),
        "allow_short": _flag(allow_short),
        "periods_per_year": float(periods_per_year),
        "allow_gaps": _flag(allow_gaps),
    }
    data = (dataset, prices)
    new = _version(model, challenger, db)
    if new is None:
        raise ValueError(f"models:/{model}@{challenger} is not set: nothing to promote")
    old = _version(model, champion, db)
    context.set_label("model", model)
    context.set_label("metric", metric)
    out: dict[str, Any] = {
        "metric": metric,
        "direction": direction,
        "challenger_version": new.version,
        "champion_version": old.version if old is not None else None,
        "challenger_metric": None,
        "champion_metric": None,
        "improvement": None,
    }
    if old is not None and old.version == new.version:
        promoted, reason = False, f"version {new.version} is already {champion}"
    else:
        out["challenger_metric"] = _metric(context, new, metric, data, db, options)
        if old is None:
            promoted, reason = True, f"no {champion}: the first {challenger} becomes {champion}"
        else:
            out["champion_metric"] = _metric(context, old, metric, data, db, options)
            sign = 1.0 if direction == "max" else -1.0
            out["improvement"] = sign * (out["challenger_metric"] - out["champion_metric"])
            promoted = out["improvement"] > margin
            verb = "beats" if promoted else "does not beat"
            reason = (
                f"{challenger} v{new.version} {verb} {champion} v{old.version} on {metric} "
                f"({direction}): {out['challenger_metric']:.6g} vs "
                f"{out['champion_metric']:.6g}, improvement {out['improvement']:.6g} "
                f"{'>' if promoted else '<='} {margin:g}"
            )
    if promoted:
        set_alias(model, champion, new.version, db=db)
        if old is not None and previous_alias:
            set_alias(model, previous_alias, old.version, db=db)
    out.update(
        promoted=promoted,
        reason=reason,
        new_champion_version=new.version if promoted else out["champion_version"],
    )
    context.logger.info_with("promotion decided", model=model, **out)
    context.log_results(out)
    context.set_label("promoted", str(promoted).lower())
