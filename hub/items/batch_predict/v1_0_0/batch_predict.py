"""batch_predict 1.0.0 — a logged model over a dataset → a predictions dataset.

The dataset is scored in chunks (bounded memory for big tables); the output keeps the input's
columns (or ``keep_columns``) beside ``predicted_<label>`` and, with ``proba``, one
``proba_<class>`` column per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def model_features(model: Any, df: pd.DataFrame, exclude: Sequence[str]) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    if names is None and hasattr(model, "get_booster"):
        names = model.get_booster().feature_names
    if names is None:
        return [c for c in df.select_dtypes(include=["number", "bool"]).columns if c not in exclude]
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ValueError(f"the dataset lacks feature(s) the model needs: {missing[:10]}")
    return [str(n) for n in names]


def predict_frame(
    model: Any,
    df: pd.DataFrame,
    *,
    label: str = "label",
    proba: bool = False,
    batch_size: int = 100_000,
    exclude: Sequence[str] = (),
) -> pd.DataFrame:
    features = model_features(model, df, [label, *exclude])
    parts = []
    for start in range(0, len(df), max(1, int(batch_size))):
        chunk = df.iloc[start : start + int(batch_size)][features]
        out = pd.DataFrame(index=chunk.index)
        out[f"predicted_{label}"] = np.asarray(model.predict(chunk))
        if proba and hasattr(model, "predict_proba"):
            p = np.asarray(model.predict_proba(chunk))
            classes = getattr(model, "classes_", range(p.shape[1]))
            for i, cls in enumerate(classes):
                out[f"proba_{cls}"] = p[:, i]
        parts.append(out)
    return pd.concat(parts) if parts else pd.DataFrame(index=df.index)


def batch_predict(
    context: Any,
    model: Any = None,
    dataset: Any = None,
    label_column: str = "label",
    drop_columns: Any = None,
    keep_columns: Any = None,
    proba: Any = False,
    batch_size: int = 100_000,
    result_set: str = "prediction",
    format: str = "parquet",
) -> None:
    if model is None or dataset is None:
        raise ValueError("batch_predict needs a model (URI) and a dataset")
    if isinstance(model, str):
        from tickrun.functions.runs import load_model

        loaded = load_model(model)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
    df = dataset.as_df() if hasattr(dataset, "as_df") else dataset
    want_proba = proba if isinstance(proba, bool) else str(proba).lower() in ("1", "true", "yes")
    preds = predict_frame(
        model,
        df,
        label=label_column,
        proba=want_proba,
        batch_size=int(batch_size),
        exclude=_names(drop_columns),
    )
    keep = _names(keep_columns) or list(df.columns)
    out = pd.concat([df[keep], preds], axis=1)
    context.log_dataset(result_set, out, format=format)
    predicted = preds[f"predicted_{label_column}"]
    results: dict[str, Any] = {"rows": len(out)}
    if pd.api.types.is_numeric_dtype(predicted):
        results["predicted_mean"] = float(predicted.mean())
    if label_column in df.columns:
        results["agreement"] = float((predicted.to_numpy() == df[label_column].to_numpy()).mean())
    context.log_results(results)
