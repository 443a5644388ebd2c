"""The MLRun walk-through as one pipeline, on the shipped hourly BTCUSDT bars.

    data ─▶ features ─▶ train (sweep) ─▶ best-model ─▶ backtest ─▶ register ─▶ promote
                                                                                 │
                          monitor ◀─ score ◀─ deploy (models:/btc-updown@champion) ◀┘

Run it (docs/pipelines-walkthrough.md says more)::

    tickrun pipeline run functions/examples/btc_walkthrough/pipeline.py:walkthrough

``walkthrough()`` builds the pipeline; its keyword arguments are the knobs (the window, the
grid, costs, the registered model's and the served function's names). Every step is a tracked
run labelled with the pipeline; the hub items keep their own rules (purged time split,
validation-selected sweep, walk-forward net of fees with controls, promotion on the backtest's
net return): this file only wires them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tickrun import Pipeline

STEPS = Path(__file__).resolve().with_name("steps.py")
MODEL = "btc-updown"
LOGREG = "sklearn.linear_model.LogisticRegression"


def _step(name: str) -> str:
    # An absolute path: the pipeline may be run from any folder, or by a scheduled job.
    return f"{STEPS}:{name}"


def _grid(values: Iterable[Any] | str) -> list[float]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    grid = [float(v) for v in values]
    if not grid:
        raise ValueError("the C grid is empty")
    return grid


def walkthrough(
    *,
    start: str = "2024-06-01",
    end: str = "2025-01-01",
    c_grid: Iterable[Any] | str = (0.01, 0.1, 1.0),
    model_class: str = LOGREG,
    windows: str = "6,24,72",
    fee_bp: float = 10.0,
    wf_splits: int = 5,
    model: str = MODEL,
    function: str = MODEL,
    live_rows: int = 500,
    keep_requirements: bool = True,
    controller: str = "",
    project: str = "btc",
) -> Pipeline:
    """The walk-through pipeline (module-level callable for ``tickrun pipeline run``).

    ``start``/``end``: the bars used (a fixed window, so a re-run is cached up to training);
    ``c_grid``: the sweep over the logistic regression's inverse regularisation C;
    ``fee_bp``: taker fee per side in the backtest and the promotion; ``wf_splits``:
    walk-forward folds; ``live_rows``: newest bars sent to the served model as traffic;
    ``keep_requirements=False`` deploys model_server on the controller's own interpreter
    (no wheelhouse build: tests and demos); ``controller``: the controller's URL for the deploy
    and score steps (default ``$TICKRUN_CONTROLLER_URL``, else the local controller's state
    files; a scheduled firing needs it, its job is given the controller's database only)."""
    p = Pipeline("btc-walkthrough", project=project)
    data = p.step("data", _step("market_window"), params={"start": start, "end": end})
    bars = data.output("bars")
    features = p.step(
        "features",
        "hub://market_features:1.2#featurize",
        inputs={"dataset": bars},
        # interval: rows whose look-back or label spans a gap in the bars are dropped.
        params={"windows": windows, "interval": "1h", "label": "updown", "horizon": 1},
    )
    feats = features.output("features")
    train = p.step(
        "train",
        "hub://auto_trainer:1.1#train",
        inputs={"dataset": feats},
        params={
            "model_class": model_class,
            "scale": True,
            "train_test_split_size": 0.2,
            # Selection on a validation split between train and test, both purged: the
            # winner's test figures stay unbiased by the sweep.
            "validation_size": 0.2,
            "CLASS_max_iter": 2000,
            "plots": False,
        },
        hyperparams={"CLASS_C": _grid(c_grid)},
        selector="max.validation_auc",
    )
    best = p.step("best-model", _step("best_model"), params={"train_run": train.result("uid")})
    backtest = p.step(
        "backtest",
        "hub://backtest:1.2#backtest",
        inputs={"dataset": feats, "prices": bars},
        params={
            # The winner's recipe refit on an expanding window, each fold purged of the
            # label's horizon: every prediction is out of sample.
            "walk_forward_splits": wf_splits,
            "model_class": best.result("model_class"),
            "CLASS_C": best.result("CLASS_C"),
            "CLASS_max_iter": 2000,
            "scale": True,
            "fee_bp": fee_bp,
            "null_paths": 200,
            "seed": 0,
        },
    )
    register = p.step(
        "register",
        _step("register"),
        params={
            "model": best.result("model_uri"),
            "name": model,
            "alias": "challenger",
            "backtest_run": backtest.result("uid"),
        },
        cache=False,  # idempotent itself (same model file: same version), and cheap
    )
    promote = p.step(
        "promote",
        "hub://model_promote:1.0#promote",
        inputs={"dataset": feats, "prices": bars},
        params={
            "model": model,
            "metric": "backtest.net_return",
            # Each version's recipe refit purged walk-forward over the same bars and costs:
            # neither is judged on bars it was trained on.
            "walk_forward_splits": wf_splits,
            "fee_bp": fee_bp,
        },
        after=[register],
        cache=False,  # decides on the registry's aliases now, not on its inputs
    )
    deploy = p.step(
        "deploy",
        _step("deploy_by_alias"),
        params={
            "model": model,
            "alias": "champion",
            "function": function,
            "keep_requirements": keep_requirements,
            "controller": controller,
        },
        after=[promote],
        cache=False,
    )
    score = p.step(
        "score",
        _step("score_window"),
        inputs={"features": feats, "prices": bars},
        params={"function": function, "rows": live_rows, "controller": controller},
        after=[deploy],
        cache=False,  # traffic to the server as it is now
    )
    p.step(
        "monitor",
        "hub://model_monitor:1.1#monitor",
        inputs={"reference": score.output("reference"), "current": score.output("current")},
        params={"time_column": "timestamp", "fee_bp": fee_bp},
        cache=False,
    )
    return p
