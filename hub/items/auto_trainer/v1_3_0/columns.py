"""auto_trainer 1.3.0: what each column is — a feature, a target (never a feature), or evidence
that the table is a time series. Pure functions of the frame and the dataset's metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

KNOWN_TARGETS = ("label", "future_return")  # market_features' targets
FORWARD_PREFIXES = ("future_", "fwd_", "forward_")


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def dataset_meta(dataset: Any) -> dict[str, Any]:
    """The metadata a producer logged with the dataset (``dataset.meta.meta``), or {}."""
    record = getattr(dataset, "meta", None)
    meta = getattr(record, "meta", None)
    return dict(meta) if isinstance(meta, Mapping) else {}


def is_forward_name(column: Any) -> bool:
    return str(column).lower().startswith(FORWARD_PREFIXES)


def target_reasons(
    columns: Sequence[Any],
    label_columns: Any,
    meta_targets: Any = (),
    keep_columns: Any = (),
) -> dict[str, str]:
    """Column → why it is a target (so never a feature), for the columns present."""
    labels, meta_t, keep = as_list(label_columns), as_list(meta_targets), set(as_list(keep_columns))
    out: dict[str, str] = {}
    for col in map(str, columns):
        if col in labels:
            out[col] = "label column"
        elif col in meta_t:
            out[col] = "target in the dataset's metadata"
        elif col in KNOWN_TARGETS:
            out[col] = "market_features target"
        elif is_forward_name(col) and col not in keep:
            out[col] = "forward-looking name (" + "/".join(p + "*" for p in FORWARD_PREFIXES) + ")"
    refused = sorted(keep & set(out))
    if refused:
        raise ValueError(
            f"keep_columns cannot keep {refused}: {out[refused[0]]}; it only overrides the "
            "forward-name rule (" + ", ".join(p + "*" for p in FORWARD_PREFIXES) + ")"
        )
    return out


@dataclass
class FeaturePlan:
    features: list[str]
    labels: list[str]  # present in the frame (all of them, or none)
    dropped_targets: dict[str, str]  # target column → reason (label columns excluded)


def feature_plan(
    df: pd.DataFrame,
    label_columns: Any,
    drop_columns: Any = None,
    *,
    meta_targets: Any = (),
    keep_columns: Any = (),
    time_column: str | None = None,
) -> FeaturePlan:
    """Which columns are features: numeric ones that are neither targets, dropped, nor the time."""
    labels = as_list(label_columns)
    reasons = target_reasons(df.columns, labels, meta_targets, keep_columns)
    drops = set(as_list(drop_columns)) | set(reasons) | ({time_column} if time_column else set())
    rest = df[[c for c in df.columns if str(c) not in drops]]
    # Ids and text are not features a model can use: non-numeric columns are left out.
    features = [str(c) for c in rest.select_dtypes(include=["number", "bool"]).columns]
    present = [c for c in labels if c in df.columns]
    return FeaturePlan(
        features=features,
        labels=present if len(present) == len(labels) else [],
        dropped_targets={c: r for c, r in reasons.items() if c not in labels},
    )


def series_evidence(
    df: pd.DataFrame, meta: Mapping[str, Any], time_name: str | None, times: Any
) -> list[str]:
    """Why the dataset is a time series (empty for a plain table)."""
    why = []
    if times is not None:
        why.append(f"time index {time_name or 'DatetimeIndex'!r}")
    if meta.get("label_horizon_bars"):
        why.append(f"metadata label_horizon_bars={meta['label_horizon_bars']}")
    forward = [str(c) for c in df.columns if is_forward_name(c)]
    if forward:
        why.append(f"forward label column(s) {', '.join(forward)}")
    return why
