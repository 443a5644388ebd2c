"""Example job: hourly BTCUSDT up/down classifier, tracked as a run.

    tickrun run functions/examples/train_job/train.py:train \\
        --input bars=hub/data/btcusdt_1h.csv.gz --param rows=20000 \\
        --hyper max_depth=2,4,6 --selector max.accuracy --parallel 2

Logs the feature table as a dataset, the model (XGBoost native JSON, or scikit-learn via joblib
with ``framework=sklearn``), a feature-importance plot and the test metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FEATURES = ["ret_1", "ret_3", "ret_12", "ret_24", "vol_24", "range", "volume_z"]


def make_features(bars: pd.DataFrame) -> pd.DataFrame:
    close = bars["close"].astype(float)
    df = pd.DataFrame({"timestamp": bars["timestamp"]})
    for n in (1, 3, 12, 24):
        df[f"ret_{n}"] = close.pct_change(n)
    df["vol_24"] = df["ret_1"].rolling(24).std()
    df["range"] = (bars["high"] - bars["low"]) / close
    vol = bars["volume"].astype(float)
    df["volume_z"] = (vol - vol.rolling(24).mean()) / vol.rolling(24).std()
    df["up"] = (close.shift(-1) > close).astype(int)
    return df.iloc[24:-1].dropna().reset_index(drop=True)


def train(
    context: Any,
    bars: Any = None,
    rows: int = 20000,
    max_depth: int = 3,
    n_estimators: int = 60,
    learning_rate: float = 0.1,
    framework: str = "xgboost",
) -> dict[str, float]:
    raw = bars.as_df() if bars is not None else _synthetic(rows)
    raw = raw.tail(rows).reset_index(drop=True)
    data = make_features(raw)
    context.log_dataset("features", data, format="parquet")
    split = int(len(data) * 0.8)
    x_train, x_test = data[FEATURES].iloc[:split], data[FEATURES].iloc[split:]
    y_train, y_test = data["up"].iloc[:split], data["up"].iloc[split:]
    if framework == "xgboost":
        import xgboost

        model: Any = xgboost.XGBClassifier(
            max_depth=max_depth,
            n_estimators=n_estimators,
            learning_rate=learning_rate,
            n_jobs=1,
            tree_method="hist",
        )
    else:
        from sklearn.ensemble import GradientBoostingClassifier

        model = GradientBoostingClassifier(
            max_depth=max_depth, n_estimators=n_estimators, learning_rate=learning_rate
        )
    model.fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean())
    base_rate = float(max(y_test.mean(), 1 - y_test.mean()))
    context.logger.info_with("trained", accuracy=accuracy, rows=len(data))
    context.log_model(
        "model",
        model,
        framework=framework,
        metrics={"accuracy": accuracy},
        feature_names=FEATURES,
        labels={"target": "up_next_hour"},
    )
    context.log_artifact("importance", _importance_plot(model))
    return {"accuracy": accuracy, "base_rate": base_rate, "test_rows": len(x_test)}


def _importance_plot(model: Any) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.barh(FEATURES, getattr(model, "feature_importances_", np.zeros(len(FEATURES))))
    ax.set_title("feature importance")
    return fig


def _synthetic(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    close = 30000 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=rows, freq="h"),
            "open": close,
            "high": close * 1.005,
            "low": close * 0.995,
            "close": close,
            "volume": rng.uniform(10, 100, rows),
        }
    )
