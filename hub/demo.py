"""The hub's part of ``make demo``: raw hourly BTCUSDT bars → features → a trained model → a
backtest → the model served over HTTP and invoked, all through versioned ``hub://`` items.

``python -m tickrun.hub.demo`` runs it alone; ``tickrun.demo`` calls :func:`run_demo`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(
    *, rows: int = 20_000, data: Path | None = None, model_class: str = "xgboost.XGBClassifier"
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

    trainer = import_function("hub://auto_trainer:1")
    _say(f"2. {trainer.uri}: {model_class}, time-ordered 80/20 split")
    params: dict[str, Any] = {
        "model_class": model_class,
        "drop_columns": "future_return",
        "time_ordered": True,
    }
    if model_class.startswith("xgboost"):
        params.update(CLASS_n_estimators=200, CLASS_max_depth=3, CLASS_learning_rate=0.05)
    else:
        params["scale"] = True
    train = trainer.run(
        "train", params=params, inputs={"dataset": features.outputs["features"]}, progress=False
    )
    train.raise_for_state()
    metrics = {
        k: round(float(train.results[k]), 4)
        for k in ("accuracy", "f1_score", "precision_score", "recall_score", "auc")
    }
    _say(f"   test metrics: {json.dumps(metrics)}")

    backtest_fn = import_function("hub://backtest:1")
    _say(f"3. {backtest_fn.uri}: long when P(up) > 0.5, 10 bp fees, vs buy-and-hold")
    bt = backtest_fn.run(
        params={"model": train.outputs["model"], "fee_rate": 0.001},
        inputs={"dataset": train.outputs["test_set"], "prices": str(bars_path)},
        progress=False,
    )
    bt.raise_for_state()
    r = bt.results
    _say(
        f"   strategy {r['cumulative_return']:+.2%} (Sharpe {r['sharpe']:.2f}, max drawdown "
        f"{r['max_drawdown']:.1%}, hit rate {r['hit_rate']:.1%}, {int(r['trades'])} trades)"
    )
    _say(
        f"   buy&hold {r['bh_cumulative_return']:+.2%} (Sharpe {r['bh_sharpe']:.2f}, max "
        f"drawdown {r['bh_max_drawdown']:.1%})"
    )

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
        f"backtest {bt.uid}"
    )
    return {
        "features": features.outputs["features"],
        "model": train.outputs["model"],
        "metrics": metrics,
        "backtest": {
            k: r[k]
            for k in (
                "cumulative_return",
                "sharpe",
                "max_drawdown",
                "hit_rate",
                "bh_cumulative_return",
            )
        },
        "prediction": mlflow_reply["predictions"],
        "artifact_path": where,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--model-class", default="xgboost.XGBClassifier")
    args = parser.parse_args()
    run_demo(rows=args.rows, model_class=args.model_class)


if __name__ == "__main__":
    main()
