"""model_monitor 1.1.0: the PNG figures — PSI per feature with the threshold line, and
reference-vs-current histograms of the most drifted features."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def figures(
    table: pd.DataFrame,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    psi_threshold: float,
    top: int = 4,
) -> dict[str, Any]:
    """``psi-chart`` (PSI per feature, threshold line) and ``drift-histograms`` (reference vs
    current of the ``top`` features by PSI); the caller closes them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, Any] = {}
    shown = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.25 * len(shown) + 1)))
    colors = ["tab:red" if d else "tab:blue" for d in shown["drifted"]]
    ax.barh(shown["feature"], np.minimum(shown["psi"].to_numpy(dtype=float), 10.0), color=colors)
    ax.axvline(psi_threshold, color="black", linestyle="--", label=f"threshold {psi_threshold}")
    ax.set_xlabel("PSI (red: drifted)")
    ax.set_title("feature drift vs reference")
    ax.legend()
    fig.tight_layout()
    figs["psi-chart"] = fig
    names = list(table["feature"].head(max(int(top), 0)))
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            ref, cur = _finite(reference[name]), _finite(current[name])
            both = np.concatenate([ref, cur])
            lo, hi = np.quantile(both, [0.005, 0.995]) if both.size else (0.0, 1.0)
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
            ax.hist(ref, bins=edges, density=True, alpha=0.5, label="reference")
            ax.hist(cur, bins=edges, density=True, alpha=0.5, label="current")
            row = table.set_index("feature").loc[name]
            ax.set_title(f"{name}\nPSI {row['psi']:.3f}, KS p {row['ks_pvalue']:.2g}", fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        figs["drift-histograms"] = fig
    return figs


def log_figures(context: Any, figs: Mapping[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for key, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        context.log_artifact(key, body=buf.getvalue(), kind="plot", format="png")
