"""auto_trainer 1.3.0: the estimator — built from its import path, fitted, scored on a test set
beside the naive baselines of its training labels; its feature importance, and the dataset's
columns lined up the way it was trained. Pure functions: no run context."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

ALIASES = {
    "LogisticRegression": "sklearn.linear_model.LogisticRegression",
    "LinearRegression": "sklearn.linear_model.LinearRegression",
    "RandomForestClassifier": "sklearn.ensemble.RandomForestClassifier",
    "RandomForestRegressor": "sklearn.ensemble.RandomForestRegressor",
    "XGBClassifier": "xgboost.XGBClassifier",
    "XGBRegressor": "xgboost.XGBRegressor",
}


def create_model(
    model_class: str, class_kwargs: Mapping[str, Any] | None = None, *, scale: bool = False
) -> Any:
    path = ALIASES.get(model_class, model_class)
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(
            f"model_class {model_class!r} is not an import path such as "
            "sklearn.linear_model.LogisticRegression"
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import model_class {path!r}: {exc}") from exc
    model = cls(**dict(class_kwargs or {}))
    if scale:
        # Linear models on raw features (returns ~1e-3, RSI ~50) converge slowly or not at all.
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), model)
    return model


def final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def framework_of(model: Any) -> str:
    root = type(final_estimator(model)).__module__.split(".")[0]
    if getattr(model, "steps", None):
        return "sklearn"  # a pipeline is pickled as a whole
    return {"sklearn": "sklearn", "xgboost": "xgboost"}.get(root, root)


def is_classifier(model: Any) -> bool:
    from sklearn.base import is_classifier as sk_is_classifier

    try:
        return bool(sk_is_classifier(model))
    except Exception:  # not a scikit-learn-style estimator
        return hasattr(model, "predict_proba")


def target_values(y: pd.DataFrame) -> Any:
    """The label column(s) as an array: 1-d for one label, 2-d for several."""
    return y.iloc[:, 0].to_numpy() if y.shape[1] == 1 else y.to_numpy()


def fit(
    model: Any, x: pd.DataFrame, y: pd.DataFrame, fit_kwargs: Mapping[str, Any] | None = None
) -> Any:
    model.fit(x, target_values(y), **dict(fit_kwargs or {}))
    return model


def compute_metrics(
    model: Any,
    x: pd.DataFrame,
    y: pd.DataFrame,
    predict_kwargs: Mapping[str, Any] | None = None,
    *,
    y_train: pd.DataFrame | None = None,
    classifier: bool | None = None,
) -> dict[str, float]:
    """Metrics on (x, y) beside naive baselines fitted on ``y_train`` (default: on y itself);
    ``classifier``: :func:`is_classifier` of the model when the caller knows it already."""
    from sklearn import metrics as m

    target = target_values(y)
    reference = target if y_train is None else target_values(y_train)
    pred = model.predict(x, **dict(predict_kwargs or {}))
    if classifier is None:
        classifier = is_classifier(model)
    if not classifier:
        mse = float(m.mean_squared_error(target, pred))
        const = np.broadcast_to(np.mean(reference, axis=0), np.shape(target))
        base_mse = float(m.mean_squared_error(target, const))
        return {
            "mae": float(m.mean_absolute_error(target, pred)),
            "mse": mse,
            "rmse": math.sqrt(mse),
            "r2_score": float(m.r2_score(target, pred)),
            "baseline_mae": float(m.mean_absolute_error(target, const)),
            "baseline_rmse": math.sqrt(base_mse),
            "baseline_r2_score": float(m.r2_score(target, const)),
        }
    present = np.unique(target)
    classes = np.asarray(getattr(model, "classes_", np.unique(reference)))
    binary = len(classes) <= 2
    avg = "binary" if binary and len(np.union1d(present, classes)) <= 2 else "macro"
    values, counts = np.unique(reference, return_counts=True)
    majority = values[int(np.argmax(counts))]
    # f1_score, precision_score and recall_score each compute this same triple and keep one.
    precision, recall, f1, _ = m.precision_recall_fscore_support(
        target, pred, average=avg, zero_division=0
    )
    out = {
        "accuracy": float(m.accuracy_score(target, pred)),
        "f1_score": float(f1),
        "precision_score": float(precision),
        "recall_score": float(recall),
        "majority_accuracy": float(np.mean(target == majority)),
    }
    if binary:
        out["base_rate"] = float(np.mean(target == classes[-1]))
    freq = np.array([np.mean(reference == c) for c in classes], dtype=float)
    if np.isin(present, classes).all():
        # the forecast that knows nothing but the training base rate
        base = np.clip(np.tile(freq, (len(target), 1)), 1e-15, 1.0)
        out["baseline_log_loss"] = float(m.log_loss(target, base, labels=classes))
    if hasattr(model, "predict_proba") and np.isin(present, classes).all():
        proba = model.predict_proba(x)
        out["log_loss"] = float(m.log_loss(target, proba, labels=classes))
        if len(present) > 1:
            out["auc"] = float(
                m.roc_auc_score(target, proba[:, 1])
                if binary
                else m.roc_auc_score(target, proba, multi_class="ovr", labels=classes)
            )
    return out


def feature_importance(model: Any, columns: Sequence[str]) -> pd.Series | None:
    model = final_estimator(model)
    values = getattr(model, "feature_importances_", None)
    if values is None:
        coef = getattr(model, "coef_", None)
        if coef is None:
            return None
        values = np.abs(np.atleast_2d(coef)).mean(axis=0)
    series = pd.Series(np.asarray(values, dtype=float), index=list(columns))
    return series.sort_values(ascending=False)


def align_features(model: Any, df: pd.DataFrame, x: pd.DataFrame) -> pd.DataFrame:
    """Columns in the order the model was trained with (extra columns dropped). A column the
    model names is taken from the dataset as it is: the model was trained on it."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        booster = getattr(model, "get_booster", None)
        names = booster().feature_names if booster is not None else None
    if names is None:
        return x
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ValueError(f"the dataset lacks feature(s) the model needs: {missing[:10]}")
    return df[list(names)]
