"""auto_trainer 1.3.0 — train, evaluate and predict with any scikit-learn or XGBoost estimator.

What 1.3.0 changes: nothing in what is fitted, computed or logged (the same model, metrics,
split, test set and artifacts as 1.2.0); the test set is logged on a helper thread while the
metrics and figures are computed (writing it, parquet and its statistics, is ~40 ms for 14,400
rows, most of it outside the GIL), instead of after them. Not beside the fit: the fit's own
threads keep both cores busy, and a fit slowed by the logging cost more than the logging did.
The three threshold metrics (precision, recall, F1) come from one
``precision_recall_fscore_support`` call instead of three.

What 1.2.0 changed: less work around the fit. The split's rows are taken
as slices when they are contiguous (a time split always is) instead of copies by index array;
the estimator's classifier test (XGBoost's scikit-learn tags are slow to build) is made once
instead of once per use.

``model_class`` is an import path (``sklearn.ensemble.RandomForestClassifier``,
``xgboost.XGBClassifier``). Extra keyword arguments follow MLRun's convention: ``CLASS_x`` goes to
the estimator's constructor, ``FIT_x`` to ``fit``, ``PREDICT_x`` to ``predict``.

What 1.1.0 changes (1.0.0's defaults leaked the future into the scores):

* **Targets are never features.** A column leaves the features when it is a label column, is
  listed in the dataset's metadata ``targets`` (``log_dataset(..., meta={"targets": [...]})``),
  is one of market_features' targets (``label``, ``future_return``), or its name starts with
  ``future_``, ``fwd_`` or ``forward_`` (any case): forward-looking by convention.
  ``keep_columns`` overrides the name rule only. The detected time column is not a feature either.
* **A time series is split in time, purged.** A dataset is a time series when it has a time
  index (metadata ``time_column``, the ``time_column`` parameter, a DatetimeIndex, a datetime
  column, or a column named timestamp/time/datetime/date/open_time) or a forward label
  (metadata ``label_horizon_bars`` or a forward-named column). Its rows must be in time order:
  unsorted or duplicated timestamps are refused, not sorted, since a label computed over rows in
  the wrong order is wrong already. ``split="auto"`` (default) then tests on the last rows, and
  ``horizon`` rows are dropped between train and test (and around the validation split) so no
  training label looks into the test period: horizon = metadata ``label_horizon_bars`` or the
  ``label_horizon`` parameter (the larger when both are given), else the h for which
  ``future_return`` equals the h-bar forward return of ``close`` (or of the price rebuilt from
  ``ret_1``: market_features 1.1 output, which logs no metadata), else 1 bar. A random split of a
  time series happens only with ``split="random"`` (1.0's ``time_ordered=False`` or
  ``stratify=True`` are refused on one). A plain table keeps the random split, stratified for
  classifiers. A given ``test_set`` replaces the split; the last ``horizon`` rows are purged.
* **Headline metrics beside baselines**: ``auc``, ``log_loss``, ``base_rate`` (the test set's
  positive rate), ``majority_accuracy`` (always the training majority class) and
  ``baseline_log_loss`` (the training class frequencies as the forecast); regressors get
  ``baseline_mae``/``baseline_rmse``/``baseline_r2_score`` (the training mean as the forecast).
  With ``validation_size`` > 0 the same metrics of the validation split come as ``validation_*``.


The item's files (item.yaml ``files:``), each of pure functions that take no run context, so they
are tested and benchmarked on their own:

- ``columns.py``: features and targets (:func:`feature_plan`), why a table is a time series;
- ``timeseries.py``: the time index (:func:`time_index`), its order, the label horizon, the
  split (:func:`split_rows`, a given test set);
- ``estimator.py``: the model from its import path, :func:`compute_metrics` beside baselines,
  feature importance;
- ``plots.py``: the PNG figures (:func:`make_plots` decides what to draw);
- this module: the handlers, which wire them to the run context.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import sys
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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


columns = _sibling("columns")
timeseries = _sibling("timeseries")
estimator = _sibling("estimator")
plots = _sibling("plots")

# The pure pieces under the names 1.1.0 has always exported (1.2.0 and 1.3.0 keep them).
KNOWN_TARGETS = columns.KNOWN_TARGETS
FORWARD_PREFIXES = columns.FORWARD_PREFIXES
FeaturePlan = columns.FeaturePlan
as_list = columns.as_list
dataset_meta = columns.dataset_meta
is_forward_name = columns.is_forward_name
target_reasons = columns.target_reasons
feature_plan = columns.feature_plan
series_evidence = columns.series_evidence
TIME_NAMES = timeseries.TIME_NAMES
SPLITS = timeseries.SPLITS
Split = timeseries.Split
time_index = timeseries.time_index
check_time_order = timeseries.check_time_order
choose_split = timeseries.choose_split
infer_horizon = timeseries.infer_horizon
label_horizon_bars = timeseries.label_horizon_bars
split_rows = timeseries.split_rows
ALIASES = estimator.ALIASES
create_model = estimator.create_model
final_estimator = estimator.final_estimator
framework_of = estimator.framework_of
is_classifier = estimator.is_classifier
fit = estimator.fit
compute_metrics = estimator.compute_metrics
feature_importance = estimator.feature_importance
_flag = timeseries.flag
_target = estimator.target_values
_align = estimator.align_features

CLASS_PREFIX = "CLASS_"
FIT_PREFIX = "FIT_"
PREDICT_PREFIX = "PREDICT_"
VALIDATION_PREFIX = "validation_"


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


def make_plots(
    model: Any,
    x: pd.DataFrame,
    y: pd.DataFrame,
    *,
    max_features: int = 25,
    classifier: bool | None = None,
) -> dict[str, Any]:
    """Matplotlib figures keyed by artifact name (caller closes them); ``classifier``:
    :func:`is_classifier` of the model when the caller knows it already."""
    target = _target(y)
    if classifier is None:
        classifier = is_classifier(model)
    classification = classifier and target.ndim == 1
    binary = classification and hasattr(model, "predict_proba") and len(np.unique(target)) == 2
    return plots.figures(
        target,
        model.predict(x),
        classification=classification,
        proba=model.predict_proba(x)[:, 1] if binary else None,
        importance=feature_importance(model, list(x.columns)),
        max_features=max_features,
    )


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


def take_rows(frame: Any, rows: Any) -> Any:
    """``frame.iloc[rows]``, as a slice (no copy) when ``rows`` are consecutive positions."""
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
        return frame.iloc[int(rows[0]) : int(rows[-1]) + 1]
    return frame.iloc[rows]


# --- run-context wiring ----------------------------------------------------------------------


def _frame(dataset: Any) -> pd.DataFrame:
    return dataset.as_df() if hasattr(dataset, "as_df") else dataset


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


def train(
    context: Any,
    dataset: Any = None,
    model_class: str = "sklearn.linear_model.LogisticRegression",
    label_columns: Any = "label",
    drop_columns: Any = None,
    model_name: str = "model",
    test_set: Any = None,
    train_test_split_size: float = 0.2,
    validation_size: float = 0.0,
    split: str = "auto",
    label_horizon: Any = None,
    time_column: Any = None,
    keep_columns: Any = None,
    random_state: int | None = 42,
    stratify: Any = None,
    time_ordered: Any = None,
    test_set_key: str = "test_set",
    plots: Any = True,
    scale: Any = False,
    **kwargs: Any,
) -> None:
    """Split (or use the ``test_set`` input), fit, evaluate on the test set, and log metrics,
    baselines, the split, plots, the test set and the model."""
    if dataset is None:
        raise ValueError("train needs a dataset input")
    class_kwargs, fit_kwargs, predict_kwargs = split_kwargs(kwargs)
    meta = dataset_meta(dataset)
    df = _frame(dataset)
    try:
        time_name, times = time_index(df, meta, time_column or None)
    except ValueError:
        # a time-like name over values that are no timestamps: only split=random gets past it
        if time_column or str(split).strip().lower() != "random":
            raise
        time_name, times = None, None
    plan = feature_plan(
        df,
        label_columns,
        drop_columns,
        meta_targets=meta.get("targets"),
        keep_columns=keep_columns,
        time_column=time_name,
    )
    if not plan.labels:
        raise ValueError(f"label column(s) {as_list(label_columns)} not in the dataset")
    if not plan.features:
        raise ValueError("no numeric feature column left once targets and drops are removed")
    if plan.dropped_targets:
        context.logger.info_with(
            "target columns dropped from the features", columns=plan.dropped_targets
        )
    why = series_evidence(df, meta, time_name, times)
    model = create_model(model_class, class_kwargs, scale=_flag(scale))
    classifier = is_classifier(model)
    mode = choose_split(
        split,
        time_series=bool(why),
        why="; ".join(why),
        time_ordered=time_ordered,
        stratify=stratify,
    )
    horizon = 0
    if mode == "time":
        horizon = label_horizon_bars(meta, label_horizon, bool(why), infer_horizon(df))
    if mode == "time" and times is not None:
        check_time_order(times)
    if mode == "random" and why:
        context.logger.warn_with(
            "random split of a time series, as asked: test scores will be optimistic",
            evidence="; ".join(why),
        )
    x, y = df[plan.features], df[plan.labels]
    val_size = float(validation_size or 0.0)
    if test_set is not None:
        if val_size > 0:
            raise ValueError("validation_size needs the split: leave test_set out to use it")
        test_df = _frame(test_set)
        parts, test_times = timeseries.given_test_set(
            df, times, test_df, dataset_meta(test_set), time_name, plan, mode, horizon
        )
        x_test, y_test = test_df[plan.features], test_df[plan.labels]
        test_rows, test_spans = test_df, timeseries.span("test", test_times, parts.test)
    else:
        do_stratify = classifier if stratify is None else _flag(stratify)
        parts = split_rows(
            len(df),
            mode=mode,
            test_size=float(train_test_split_size),
            validation_size=val_size,
            horizon=horizon,
            stratify_by=_target(y) if do_stratify and mode == "random" else None,
            random_state=None if random_state is None else int(random_state),
        )
        x_test, y_test = take_rows(x, parts.test), take_rows(y, parts.test)
        test_rows, test_spans = (
            take_rows(df, parts.test),
            timeseries.span("test", times, parts.test),
        )
    x_train, y_train = take_rows(x, parts.train), take_rows(y, parts.train)
    split_info: dict[str, Any] = {
        "split": parts.mode,
        "purge_bars": parts.purge_bars,
        "purged_rows": parts.purged_rows,
        "train_rows": len(x_train),
        "test_rows": len(x_test),
        **timeseries.span("train", times, parts.train),
        **test_spans,
    }
    if len(parts.validation):
        split_info["validation_rows"] = len(parts.validation)
        split_info.update(timeseries.span("validation", times, parts.validation))
    context.logger.info_with(
        "training", model_class=model_class, features=len(plan.features), **split_info
    )
    fit(model, x_train, y_train, fit_kwargs)
    # The whole rows (timestamps, targets), so a backtest can line the test set up with prices.
    # Logged on a helper thread while the metrics (and figures) are computed: those only read
    # the model and the rows, and neither calls the context. Not beside the fit: the fit's
    # own threads (OpenBLAS's spin) take both cores, and a fit slowed by the logging cost more
    # than the logging (bench/train). Leaving the block waits for the logging.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="auto_trainer-test-set") as pool:
        test_set_logged = pool.submit(
            context.log_dataset,
            test_set_key,
            test_rows,
            format="parquet",
            meta={
                "targets": sorted({*plan.labels, *plan.dropped_targets}),
                **({"time_column": time_name} if time_name else {}),
                **({"label_horizon_bars": horizon} if horizon else {}),
            },
        )
        metrics = compute_metrics(
            model, x_test, y_test, predict_kwargs, y_train=y_train, classifier=classifier
        )
        if len(parts.validation):
            x_val, y_val = take_rows(x, parts.validation), take_rows(y, parts.validation)
            val = compute_metrics(
                model, x_val, y_val, predict_kwargs, y_train=y_train, classifier=classifier
            )
            metrics.update({VALIDATION_PREFIX + k: v for k, v in val.items()})
        figures = make_plots(model, x_test, y_test, classifier=classifier) if _flag(plots) else {}
    test_set_logged.result()  # its error, if logging it failed
    context.log_results(
        {**metrics, **split_info, "dropped_target_columns": sorted(plan.dropped_targets)}
    )
    if figures:  # _log_figures imports pyplot: not for a run without plots
        _log_figures(context, figures)
    context.log_model(
        model_name,
        model,
        framework=framework_of(model),
        metrics=metrics,
        labels={
            "model_class": model_class,
            "scaled": str(_flag(scale)).lower(),
            "task": "classification" if classifier else "regression",
            "split": parts.mode,
        },
        feature_names=plan.features,
    )


def _features_for(
    dataset: Any, label_columns: Any, drop_columns: Any, keep_columns: Any
) -> tuple[pd.DataFrame, pd.DataFrame, FeaturePlan]:
    meta = dataset_meta(dataset)
    df = _frame(dataset)
    try:
        time_name, _times = time_index(df, meta)
    except ValueError:  # an unparseable time-like column: not a feature anyway (non-numeric)
        time_name = None
    plan = feature_plan(
        df,
        label_columns,
        drop_columns,
        meta_targets=meta.get("targets"),
        keep_columns=keep_columns,
        time_column=time_name,
    )
    return df, df[plan.features], plan


def evaluate(
    context: Any,
    model: Any = None,
    dataset: Any = None,
    label_columns: Any = "label",
    drop_columns: Any = None,
    keep_columns: Any = None,
    plots: Any = True,
    **kwargs: Any,
) -> None:
    """Metrics and plots of a logged model on a labelled dataset; the baselines come from the
    dataset itself (there is no training set at hand)."""
    if model is None or dataset is None:
        raise ValueError("evaluate needs a model (URI) and a dataset")
    _cls, _fit, predict_kwargs = split_kwargs(kwargs)
    estimator = _load_model(model)
    df, x, plan = _features_for(dataset, label_columns, drop_columns, keep_columns)
    if not plan.labels:
        raise ValueError(f"label column(s) {as_list(label_columns)} not in the dataset")
    x = _align(estimator, df, x)
    y = df[plan.labels]
    context.log_results(compute_metrics(estimator, x, y, predict_kwargs))
    if _flag(plots):
        _log_figures(context, make_plots(estimator, x, y))


def predict(
    context: Any,
    model: Any = None,
    dataset: Any = None,
    label_columns: Any = "label",
    drop_columns: Any = None,
    keep_columns: Any = None,
    result_set: str = "prediction",
    proba: Any = False,
    **kwargs: Any,
) -> None:
    """Predictions of a logged model over a dataset, logged as the ``prediction`` dataset."""
    if model is None or dataset is None:
        raise ValueError("predict needs a model (URI) and a dataset")
    _cls, _fit, predict_kwargs = split_kwargs(kwargs)
    estimator = _load_model(model)
    df, x, _plan = _features_for(dataset, label_columns, drop_columns, keep_columns)
    x = _align(estimator, df, x)
    preds = predictions_frame(
        estimator, x, proba=_flag(proba), label_columns=label_columns, predict_kwargs=predict_kwargs
    )
    out = pd.concat([df, preds], axis=1)
    context.log_dataset(result_set, out, format="parquet")
    context.log_result("rows", len(out))


__all__ = [n for n, v in dict(globals()).items() if inspect.isfunction(v) and not n.startswith("_")]
