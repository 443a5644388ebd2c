"""auto_trainer 1.3.0: the PNG figures of a test set — confusion matrix, ROC and calibration
curves for a classifier (the last two for a binary one with probabilities), predicted vs actual
for a regressor, and the feature importance. Drawn from arrays; what to draw is decided from
the model by auto_trainer.py's ``make_plots``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def figures(
    target: Any,
    pred: Any,
    *,
    classification: bool,
    proba: np.ndarray | None = None,
    importance: pd.Series | None = None,
    max_features: int = 25,
) -> dict[str, Any]:
    """Matplotlib figures keyed by artifact name (caller closes them); ``proba``: P(positive
    class) of a binary classifier, ``importance``: sorted, largest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as m
    from sklearn.calibration import calibration_curve

    figs: dict[str, Any] = {}
    if classification:
        fig, ax = plt.subplots(figsize=(5, 4))
        m.ConfusionMatrixDisplay.from_predictions(target, pred, ax=ax, colorbar=False)
        ax.set_title("confusion matrix (test set)")
        figs["confusion-matrix"] = fig
        if proba is not None:
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
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(target, pred, s=4, alpha=0.4)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("predicted vs actual (test set)")
        figs["prediction-scatter"] = fig
    if importance is not None:
        top = importance.head(max_features)[::-1]
        fig, ax = plt.subplots(figsize=(6, max(3.0, 0.25 * len(top) + 1)))
        ax.barh(top.index, top.to_numpy())
        ax.set_title("feature importance")
        fig.tight_layout()
        figs["feature-importance"] = fig
    return figs
