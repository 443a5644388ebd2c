"""describe 1.0.0 — a dataset's statistics, histograms, correlations and class balance."""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per column: count, missing, mean, std, min, quartiles, max, skew, kurtosis, unique."""
    numeric = df.select_dtypes(include=["number", "bool"]).astype(float)
    stats = numeric.describe().T
    stats["missing"] = df[numeric.columns].isna().sum()
    stats["skew"] = numeric.skew()
    stats["kurtosis"] = numeric.kurt()
    stats["unique"] = numeric.nunique()
    others = [c for c in df.columns if c not in numeric.columns]
    if others:
        extra = pd.DataFrame(
            {
                "count": df[others].notna().sum(),
                "missing": df[others].isna().sum(),
                "unique": df[others].nunique(),
            }
        )
        stats = pd.concat([stats, extra])
    stats.index.name = "column"
    return stats.reset_index()


def class_balance(labels: pd.Series) -> pd.DataFrame:
    counts = labels.value_counts(dropna=False).sort_index()
    return pd.DataFrame(
        {
            "class": counts.index.astype(str),
            "count": counts.to_numpy(),
            "fraction": (counts / counts.sum()).to_numpy(),
        }
    )


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def histograms_figure(df: pd.DataFrame, columns: list[str], bins: int = 50) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(columns)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, col in zip(axes.flat, columns, strict=False):
        values = df[col].dropna().astype(float)
        # clip the 0.1% tails so one outlier bar does not flatten the histogram
        lo, hi = (
            values.quantile([0.001, 0.999]) if len(values) > 100 else (values.min(), values.max())
        )
        ax.hist(values.clip(lo, hi), bins=bins)
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def correlation_figure(corr: pd.DataFrame) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.35 * len(corr) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(corr)), corr.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(corr)), corr.columns, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("correlation matrix")
    fig.tight_layout()
    return fig


def describe(
    context: Any,
    table: Any = None,
    label_column: str | None = None,
    max_histograms: int = 24,
    bins: int = 50,
    plots: Any = True,
) -> None:
    """Log statistics (``summary``), correlations (``correlation`` table + PNG), histograms and,
    with ``label_column``, the class balance."""
    if table is None:
        raise ValueError("describe needs a table input")
    df = table.as_df() if hasattr(table, "as_df") else table
    stats = summary(df)
    context.log_dataset("summary", stats, format="csv")
    numeric = df.select_dtypes(include=["number", "bool"]).astype(float)
    corr = numeric.corr()
    context.log_dataset("correlation", corr.reset_index(names="column"), format="csv")
    results: dict[str, Any] = {
        "rows": len(df),
        "columns": df.shape[1],
        "numeric_columns": numeric.shape[1],
        "missing_cells": int(df.isna().sum().sum()),
        "missing_fraction": float(df.isna().to_numpy().mean()) if df.size else 0.0,
    }
    if label_column:
        if label_column not in df.columns:
            raise ValueError(f"label_column {label_column!r} not in the table")
        balance = class_balance(df[label_column])
        context.log_dataset("class_balance", balance, format="csv")
        results["classes"] = len(balance)
        results["minority_fraction"] = float(balance["fraction"].min())
        others = corr[label_column].drop(label_column).abs() if label_column in corr else None
        if others is not None and len(others):
            results["top_label_correlation"] = str(others.idxmax())
    context.log_results(results)
    flag = plots if isinstance(plots, bool) else str(plots).lower() in ("1", "true", "yes")
    if not flag:
        return
    columns = [c for c in numeric.columns if numeric[c].nunique() > 1][: int(max_histograms)]
    if columns:
        context.log_artifact(
            "histograms",
            body=_png(histograms_figure(df, columns, int(bins))),
            kind="plot",
            format="png",
        )
    if len(corr) > 1:
        context.log_artifact(
            "correlation-matrix", body=_png(correlation_figure(corr)), kind="plot", format="png"
        )
    if label_column:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3))
        ax.bar(balance["class"], balance["count"])
        ax.set_title(f"class balance: {label_column}")
        context.log_artifact("class-balance", body=_png(fig), kind="plot", format="png")


__all__ = ["class_balance", "describe", "summary"]
