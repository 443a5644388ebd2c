"""auto_trainer 1.0.0 — train, evaluate and predict with any scikit-learn or XGBoost estimator.

``model_class`` is an import path (``sklearn.ensemble.RandomForestClassifier``,
``xgboost.XGBClassifier``). Extra keyword arguments follow MLRun's convention: ``CLASS_x`` goes to
the estimator's constructor, ``FIT_x`` to ``fit``, ``PREDICT_x`` to ``predict``.

The pure pieces (:func:`create_model`, :func:`split`, :func:`compute_metrics`, :func:`make_plots`)
take no run context, so they are tested and benchmarked on their own; the handlers only wire
them to the run context (results, plots, the test set, the model).
"""

from __future__ import annotations

import importlib
import inspect
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

CLASS_PREFIX = "CLASS_"
FIT_PREFIX = "FIT_"
PREDICT_PREFIX = "PREDICT_"
ALIASES = {
    "LogisticRegression": "sklearn.linear_model.LogisticRegression",
    "LinearRegression": "sklearn.linear_model.LinearRegression",
    "RandomForestClassifier": "sklearn.ensemble.RandomForestClassifier",
    "RandomForestRegressor": "sklearn.ensemble.RandomForestRegressor",
    "XGBClassifier": "xgboost.XGBClassifier",
    "XGBRegressor": "xgboost.XGBRegressor",
}


# --- pure logic ------------------------------------------------------------------------------


def split_kwargs(
    kwargs: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(class kwargs, fit kwargs, predict kwargs) from MLRun-style prefixed keys."""
    cls: dict[str, Any] = {}
    fit: dict[str, Any] = {}
    pred: dict[str, Any] = {}
    for key, value in kwargs.items():
        for prefix, target in ((CLASS_PREFIX, cls), (FIT_PREFIX, fit), (PREDICT_PREFIX, pred)):
            if key.startswith(prefix):
                target[key[len(prefix) :]] = value
                break
        else:
            raise TypeError(
                f"unexpected parameter {key!r}: extra parameters must start with "
                f"{CLASS_PREFIX}, {FIT_PREFIX} or {PREDICT_PREFIX}"
            )
    return cls, fit, pred


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


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def features_and_labels(
    df: pd.DataFrame, label_columns: Any, drop_columns: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Numeric feature matrix and label frame (None when the labels are absent)."""
    labels = as_list(label_columns)
    drops = [c for c in as_list(drop_columns) if c in df.columns]
    present = [c for c in labels if c in df.columns]
    x = df.drop(columns=[*drops, *present])
    # Timestamps and ids are not features; dropping them silently would hide a user error, but
    # a model cannot use them either, so non-numeric columns are dropped and named in the log.
    x = x.select_dtypes(include=["number", "bool"])
    y = df[present] if present and len(present) == len(labels) else None
    return x, y


def split(
    x: pd.DataFrame,
    y: pd.DataFrame,
    *,
    test_size: float = 0.2,
    random_state: int | None = 42,
    stratify: bool = False,
    time_ordered: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train/test split; ``time_ordered`` keeps the last ``test_size`` rows as the test set, so
    a time-series model is never tested on the past it was trained after."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"train_test_split_size must be in (0, 1), got {test_size}")
    if time_ordered:
        cut = round(len(x) * (1.0 - test_size))
        if cut <= 0 or cut >= len(x):
            raise ValueError("the dataset is too small for this split")
        return x.iloc[:cut], x.iloc[cut:], y.iloc[:cut], y.iloc[cut:]
    from sklearn.model_selection import train_test_split

    strat = y.iloc[:, 0] if stratify and y.shape[1] == 1 else (y if stratify else None)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=random_state, stratify=strat
    )
    return x_train, x_test, y_train, y_test


def _target(y: pd.DataFrame) -> Any:
    return y.iloc[:, 0].to_numpy() if y.shape[1] == 1 else y.to_numpy()


def fit(
    model: Any, x: pd.DataFrame, y: pd.DataFrame, fit_kwargs: Mapping[str, Any] | None = None
) -> Any:
    model.fit(x, _target(y), **dict(fit_kwargs or {}))
    return model


def compute_metrics(
    model: Any, x: pd.DataFrame, y: pd.DataFrame, predict_kwargs: Mapping[str, Any] | None = None
) -> dict[str, float]:
    from sklearn import metrics as m

    target = _target(y)
    pred = model.predict(x, **dict(predict_kwargs or {}))
    if is_classifier(model):
        classes = np.unique(target)
        binary = len(classes) <= 2
        avg = "binary" if binary else "macro"
        out = {
            "accuracy": float(m.accuracy_score(target, pred)),
            "f1_score": float(m.f1_score(target, pred, average=avg, zero_division=0)),
            "precision_score": float(m.precision_score(target, pred, average=avg, zero_division=0)),
            "recall_score": float(m.recall_score(target, pred, average=avg, zero_division=0)),
        }
        if hasattr(model, "predict_proba") and len(classes) > 1:
            proba = model.predict_proba(x)
            if binary:
                out["auc"] = float(m.roc_auc_score(target, proba[:, 1]))
                out["log_loss"] = float(m.log_loss(target, proba))
            else:
                out["auc"] = float(m.roc_auc_score(target, proba, multi_class="ovr"))
        return out
    mse = float(m.mean_squared_error(target, pred))
    return {
        "mae": float(m.mean_absolute_error(target, pred)),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "r2_score": float(m.r2_score(target, pred)),
    }


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


def make_plots(
    model: Any, x: pd.DataFrame, y: pd.DataFrame, *, max_features: int = 25
) -> dict[str, Any]:
    """Matplotlib figures keyed by artifact name (caller closes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as m
    from sklearn.calibration import calibration_curve

    figs: dict[str, Any] = {}
    target = _target(y)
    if is_classifier(model) and target.ndim == 1:
        pred = model.predict(x)
        fig, ax = plt.subplots(figsize=(5, 4))
        m.ConfusionMatrixDisplay.from_predictions(target, pred, ax=ax, colorbar=False)
        ax.set_title("confusion matrix (test set)")
        figs["confusion-matrix"] = fig
        classes = np.unique(target)
        if hasattr(model, "predict_proba") and len(classes) == 2:
            proba = model.predict_proba(x)[:, 1]
            fig, ax = plt.subplots(figsize=(5, 4))
            m.RocCurveDisplay.from_predictions(target, proba, ax=ax)
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
            ax.set_title("ROC curve (test set)")
            figs["roc-curves"] = fig
            frac, mean_pred = calibration_curve(target, proba, n_bins=10, strategy="quantile")
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.plot(mean_pred, frac, marker="o", label="model")
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
            lo = float(min(mean_pred.min(), frac.min()))
            hi = float(max(mean_pred.max(), frac.max()))
            pad = max(0.02, (hi - lo) * 0.1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_xlabel("mean predicted probability")
            ax.set_ylabel("fraction of positives")
            ax.set_title("calibration (test set)")
            ax.legend()
            figs["calibration-curve"] = fig
    else:
        pred = model.predict(x)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(target, pred, s=4, alpha=0.4)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("predicted vs actual (test set)")
        figs["prediction-scatter"] = fig
    importance = feature_importance(model, list(x.columns))
    if importance is not None:
        top = importance.head(max_features)[::-1]
        fig, ax = plt.subplots(figsize=(6, max(3.0, 0.25 * len(top) + 1)))
        ax.barh(top.index, top.to_numpy())
        ax.set_title("feature importance")
        fig.tight_layout()
        figs["feature-importance"] = fig
    return figs


def predictions_frame(
    model: Any,
    x: pd.DataFrame,
    *,
    proba: bool = False,
    label_columns: Any = "label",
    predict_kwargs: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    labels = as_list(label_columns) or ["label"]
    pred = np.asarray(model.predict(x, **dict(predict_kwargs or {})))
    out = pd.DataFrame(index=x.index)
    if pred.ndim == 1:
        out[f"predicted_{labels[0]}"] = pred
    else:
        for i, col in enumerate(labels[: pred.shape[1]]):
            out[f"predicted_{col}"] = pred[:, i]
    if proba and hasattr(model, "predict_proba"):
        p = model.predict_proba(x)
        classes = getattr(model, "classes_", range(p.shape[1]))
        for i, cls in enumerate(classes):
            out[f"proba_{cls}"] = p[:, i]
    return out


# --- run-context wiring ----------------------------------------------------------------------


def _load_model(uri: Any) -> Any:
    if not isinstance(uri, str):  # a DataItem or an already-loaded model
        uri = getattr(uri, "url", uri)
        if not isinstance(uri, str):
            return uri
    from tickrun.functions.runs import load_model

    loaded = load_model(uri)
    return loaded[0] if isinstance(loaded, tuple) else loaded


def _log_figures(context: Any, figs: Mapping[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for key, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        context.log_artifact(key, body=buf.getvalue(), kind="plot", format="png")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def train(
    context: Any,
    dataset: Any = None,
    model_class: str = "sklearn.linear_model.LogisticRegression",
    label_columns: Any = "label",
    drop_columns: Any = None,
    model_name: str = "model",
    test_set: Any = None,
    train_test_split_size: float = 0.2,
    random_state: int | None = 42,
    stratify: Any = None,
    time_ordered: Any = False,
    test_set_key: str = "test_set",
    plots: Any = True,
    scale: Any = False,
    **kwargs: Any,
) -> None:
    """Split (or use the ``test_set`` input), fit, evaluate on the test set, and log metrics,
    plots, the test set and the model."""
    if dataset is None:
        raise ValueError("train needs a dataset input")
    class_kwargs, fit_kwargs, predict_kwargs = split_kwargs(kwargs)
    df = dataset.as_df() if hasattr(dataset, "as_df") else dataset
    x, y = features_and_labels(df, label_columns, drop_columns)
    if y is None:
        raise ValueError(f"label column(s) {as_list(label_columns)} not in the dataset")
    model = create_model(model_class, class_kwargs, scale=_flag(scale))
    classifier = is_classifier(model)
    ordered = _flag(time_ordered)
    do_stratify = (classifier and not ordered) if stratify is None else _flag(stratify)
    if test_set is not None:
        # A given test set (MLRun's test_set input): train on all of dataset.
        test_df = test_set.as_df() if hasattr(test_set, "as_df") else test_set
        x_test, y_test = features_and_labels(test_df, label_columns, drop_columns)
        if y_test is None:
            raise ValueError(f"label column(s) {as_list(label_columns)} not in the test set")
        x_test = x_test[list(x.columns)]
        x_train, y_train = x, y
    else:
        test_df = df
        x_train, x_test, y_train, y_test = split(
            x,
            y,
            test_size=float(train_test_split_size),
            random_state=None if random_state is None else int(random_state),
            stratify=do_stratify and not ordered,
            time_ordered=ordered,
        )
    context.logger.info_with(
        "training",
        model_class=model_class,
        train_rows=len(x_train),
        test_rows=len(x_test),
        features=x.shape[1],
    )
    fit(model, x_train, y_train, fit_kwargs)
    metrics = compute_metrics(model, x_test, y_test, predict_kwargs)
    context.log_results(metrics)
    if _flag(plots):
        _log_figures(context, make_plots(model, x_test, y_test))
    # The whole rows (timestamps included), so a backtest can line the test set up with prices.
    context.log_dataset(test_set_key, test_df.loc[x_test.index], format="parquet")
    context.log_model(
        model_name,
        model,
        framework=framework_of(model),
        metrics=metrics,
        labels={
            "model_class": model_class,
            "scaled": str(_flag(scale)).lower(),
            "task": "classification" if classifier else "regression",
        },
        feature_names=list(x.columns),
    )


def evaluate(
    context: Any,
    model: Any = None,
    dataset: Any = None,
    label_columns: Any = "label",
    drop_columns: Any = None,
    plots: Any = True,
    **kwargs: Any,
) -> None:
    """Metrics and plots of a logged model on a labelled dataset."""
    if model is None or dataset is None:
        raise ValueError("evaluate needs a model (URI) and a dataset")
    _cls, _fit, predict_kwargs = split_kwargs(kwargs)
    estimator = _load_model(model)
    x, y = features_and_labels(dataset.as_df(), label_columns, drop_columns)
    if y is None:
        raise ValueError(f"label column(s) {as_list(label_columns)} not in the dataset")
    x = _align(estimator, x)
    metrics = compute_metrics(estimator, x, y, predict_kwargs)
    context.log_results(metrics)
    if _flag(plots):
        _log_figures(context, make_plots(estimator, x, y))


def predict(
    context: Any,
    model: Any = None,
    dataset: Any = None,
    label_columns: Any = "label",
    drop_columns: Any = None,
    result_set: str = "prediction",
    proba: Any = False,
    **kwargs: Any,
) -> None:
    """Predictions of a logged model over a dataset, logged as the ``prediction`` dataset."""
    if model is None or dataset is None:
        raise ValueError("predict needs a model (URI) and a dataset")
    _cls, _fit, predict_kwargs = split_kwargs(kwargs)
    estimator = _load_model(model)
    df = dataset.as_df()
    x, _y = features_and_labels(df, label_columns, drop_columns)
    x = _align(estimator, x)
    out = pd.concat(
        [
            df,
            predictions_frame(
                estimator,
                x,
                proba=_flag(proba),
                label_columns=label_columns,
                predict_kwargs=predict_kwargs,
            ),
        ],
        axis=1,
    )
    context.log_dataset(result_set, out, format="parquet")
    context.log_result("rows", len(out))


def _align(model: Any, x: pd.DataFrame) -> pd.DataFrame:
    """Columns in the order the model was trained with (extra columns dropped)."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        booster = getattr(model, "get_booster", None)
        names = booster().feature_names if booster is not None else None
    if names is None:
        return x
    missing = [c for c in names if c not in x.columns]
    if missing:
        raise ValueError(f"the dataset lacks feature(s) the model needs: {missing[:10]}")
    return x[list(names)]


__all__ = [n for n, v in dict(globals()).items() if inspect.isfunction(v) and not n.startswith("_")]
