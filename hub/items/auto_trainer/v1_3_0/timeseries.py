"""auto_trainer 1.3.0: a time series' time index, its order, the label horizon, and the split —
train | purge | [validation | purge |] test in time, or at random when asked for (or for a
plain table); a given test set in place of the split. Pure functions: no run context."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the item's files import each other only through auto_trainer.py's loader
    from columns import FeaturePlan

TIME_NAMES = ("timestamp", "time", "datetime", "date", "open_time")
SPLITS = ("auto", "time", "random")


def flag(value: Any) -> bool:
    """A boolean parameter as a run passes it: a bool, or text such as "true"/"yes"/"1"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# --- the time index -----------------------------------------------------------------------------


def _iso_with_offset(s: pd.Series) -> pd.Series | None:
    """ISO 8601 strings with a UTC offset (market_features' timestamps) through Arrow's parser,
    several times faster than pandas'; None for anything else (naive or other formats)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        parsed = pc.cast(pa.array(s, from_pandas=True), pa.timestamp("us", tz="UTC"))
    except Exception:  # no pyarrow, or not offset-qualified ISO text: pandas decides
        return None
    return pd.Series(parsed.to_pandas())


def _as_times(values: pd.Series, name: str) -> pd.Series:
    s = values.reset_index(drop=True)
    try:
        if pd.api.types.is_datetime64_any_dtype(s):
            return s
        if pd.api.types.is_numeric_dtype(s):
            # epoch numbers: seconds, milliseconds (Binance open_time), µs or ns by magnitude
            top = float(np.nanmax(np.abs(s.to_numpy(dtype=float)))) if len(s) else 0.0
            unit = "s" if top < 1e11 else "ms" if top < 1e14 else "us" if top < 1e17 else "ns"
            return pd.to_datetime(s, unit=unit, utc=True)
        fast = _iso_with_offset(s)
        if fast is not None:
            return fast
        with warnings.catch_warnings():  # "could not infer format": the error says enough
            warnings.simplefilter("ignore", UserWarning)
            return pd.to_datetime(s, utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"time column {name!r} does not parse as timestamps ({exc}); name the right one "
            "with time_column, or pass split='random' for a table that is not a time series"
        ) from exc


def time_index(
    df: pd.DataFrame, meta: Mapping[str, Any] | None = None, time_column: str | None = None
) -> tuple[str | None, pd.Series | None]:
    """(name, times by row) of the dataset's time index, or (None, None) for a plain table.

    First match: the ``time_column`` argument, metadata ``time_column``, a DatetimeIndex, a
    datetime column, a column named timestamp/time/datetime/date/open_time (any case)."""
    name = time_column or (meta or {}).get("time_column")
    if name:
        if name in df.columns:
            return str(name), _as_times(df[name], str(name))
        if df.index.name == name:
            return str(name), _as_times(df.index.to_series(), str(name))
        raise ValueError(f"time column {name!r} is not in the dataset: {list(df.columns)[:20]}")
    if isinstance(df.index, pd.DatetimeIndex):
        return None, pd.Series(df.index)
    for col in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[col]):
            return str(col), df[col].reset_index(drop=True)
    lower = {str(c).lower(): c for c in df.columns}
    for candidate in TIME_NAMES:
        if candidate in lower:
            col = lower[candidate]
            return str(col), _as_times(df[col], str(col))
    return None, None


def check_time_order(times: pd.Series, what: str = "dataset") -> None:
    """Refuse missing, duplicated or unsorted timestamps: a time split needs rows in time order."""
    if times.isna().any():
        raise ValueError(f"the {what} has {int(times.isna().sum())} row(s) without a timestamp")
    step = np.diff(pd.DatetimeIndex(times).asi8)
    if (step == 0).any():
        first = times.iloc[int(np.argmax(step == 0))]
        raise ValueError(
            f"the {what} has duplicated timestamps (first {first}): one series per table — train "
            "per symbol, or pass split='random' if the rows really are exchangeable"
        )
    if (step < 0).any():
        at = int(np.argmax(step < 0)) + 1
        raise ValueError(
            f"the {what} is not sorted by time (row {at} at {times.iloc[at]} comes after "
            f"{times.iloc[at - 1]}); sort it (df.sort_values(<time column>)) and recompute any "
            "label before training — or, if that is not the time, name the right column with "
            "time_column"
        )


# --- the split ----------------------------------------------------------------------------------


def choose_split(
    split: Any = "auto",
    *,
    time_series: bool,
    why: str = "",
    time_ordered: Any = None,
    stratify: Any = None,
) -> str:
    """``"time"`` or ``"random"``; a random split of a time series only when asked for by name.

    ``time_ordered`` is 1.0's parameter: true means ``split="time"``; false (or ``stratify``)
    asks for a random split without naming it, which a time series refuses."""
    mode = str(split or "auto").strip().lower()
    if mode not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    implicit_random = False
    if time_ordered is not None:
        ordered = flag(time_ordered)
        if (mode == "time" and not ordered) or (mode == "random" and ordered):
            raise ValueError(f"time_ordered={ordered} contradicts split={mode!r}; pass split only")
        if mode == "auto":
            mode, implicit_random = ("time", False) if ordered else ("auto", True)
    if stratify is not None and flag(stratify):
        if mode == "time":
            raise ValueError("stratify applies to a random split only (split='random')")
        implicit_random = implicit_random or mode == "auto"
    if mode == "auto" and implicit_random and time_series:
        raise ValueError(
            f"refusing a random split of a time series ({why}): rows next to each other share "
            "information and a forward label overlaps its neighbours, so random test scores are "
            "optimistic. Leave split='auto' for a time-ordered, purged split, or pass "
            "split='random' to split at random anyway"
        )
    if mode == "auto":
        return "time" if time_series and not implicit_random else "random"
    return mode


def infer_horizon(
    df: pd.DataFrame, column: str = "future_return", max_bars: int = 1000
) -> int | None:
    """The h for which ``column`` equals price[t+h]/price[t] - 1 (market_features' forward
    return), the price being ``close`` or, in a features frame, rebuilt from ``ret_1``; checked
    on a sample of rows. None when those columns are missing or no h fits."""
    if column not in df.columns or len(df) < 3:
        return None
    if "close" in df.columns:
        price = df["close"].to_numpy(dtype=float)
    elif "ret_1" in df.columns:
        price = np.cumprod(1.0 + df["ret_1"].to_numpy(dtype=float))
    else:
        return None
    forward = df[column].to_numpy(dtype=float)
    for h in range(1, min(max_bars, len(df) - 1) + 1):
        rows = np.linspace(0, len(df) - 1 - h, num=min(64, len(df) - h), dtype=int)
        if np.allclose(forward[rows], price[rows + h] / price[rows] - 1.0, rtol=1e-6, atol=1e-9):
            return h
    return None


def label_horizon_bars(
    meta: Mapping[str, Any], label_horizon: Any, time_series: bool, inferred: int | None = None
) -> int:
    """Bars the label looks ahead: the larger of metadata and parameter (purging more never
    leaks), else the horizon read off a forward-return column, else 1 for a time series."""
    given = [int(v) for v in (meta.get("label_horizon_bars"), label_horizon) if v is not None]
    if any(h < 0 for h in given):
        raise ValueError(f"label horizon must be >= 0 bars, got {given}")
    if given:
        return max(given)
    return inferred if inferred and time_series else int(time_series)


@dataclass
class Split:
    mode: str  # time | random
    train: np.ndarray  # row positions
    validation: np.ndarray
    test: np.ndarray
    purge_bars: int  # rows dropped before the validation and before the test split
    purged_rows: int


def split_rows(
    n: int,
    *,
    mode: str = "time",
    test_size: float = 0.2,
    validation_size: float = 0.0,
    horizon: int = 0,
    stratify_by: np.ndarray | None = None,
    random_state: int | None = 42,
) -> Split:
    """Row positions: time — train | purge | validation | purge | test, in order; random — a
    (stratified) random sample for test, then for validation out of the rest, no purge."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"train_test_split_size must be in (0, 1), got {test_size}")
    if not 0.0 <= validation_size < 1.0 or test_size + validation_size >= 1.0:
        raise ValueError(
            f"validation_size must be in [0, 1) and leave rows to train on (test {test_size}, "
            f"validation {validation_size})"
        )
    n_test, n_val = round(n * test_size), round(n * validation_size)
    if mode == "time":
        gaps = horizon * (2 if n_val else 1)
        n_train = n - n_test - n_val - gaps
        if n_test < 1 or n_train < 2 or (validation_size > 0 and n_val < 1):
            raise ValueError(
                f"{n} rows are too few for this split (test {n_test}, validation {n_val}, "
                f"purge {gaps})"
            )
        test = np.arange(n - n_test, n)
        val = np.arange(n - n_test - horizon - n_val, n - n_test - horizon)
        return Split(mode, np.arange(n_train), val, test, horizon, gaps)
    from sklearn.model_selection import train_test_split

    rows = np.arange(n)
    rest, test = train_test_split(
        rows, test_size=n_test, random_state=random_state, stratify=stratify_by
    )
    val = np.arange(0)
    if n_val:
        strat = None if stratify_by is None else stratify_by[rest]
        rest, val = train_test_split(
            rest, test_size=n_val, random_state=random_state, stratify=strat
        )
    return Split(mode, np.sort(rest), np.sort(val), np.sort(test), 0, 0)


def given_test_set(
    df: pd.DataFrame,
    times: pd.Series | None,
    test_df: pd.DataFrame,
    test_meta: Mapping[str, Any],
    time_name: str | None,
    plan: FeaturePlan,
    mode: str,
    horizon: int,
) -> tuple[Split, pd.Series | None]:
    """All of the dataset trains but its last ``horizon`` rows, whose labels look into the test
    period; a time-ordered test set must start after the dataset ends."""
    missing = [c for c in [*plan.features, *plan.labels] if c not in test_df.columns]
    if missing:
        raise ValueError(f"the test set lacks column(s) {missing[:10]}")
    _name, test_times = time_index(test_df, test_meta, time_name)
    if mode == "time" and times is not None and test_times is not None:
        check_time_order(test_times, "test set")
        if test_times.iloc[0] <= times.iloc[-1]:
            raise ValueError(
                f"the test set starts at {test_times.iloc[0]}, before the dataset ends "
                f"({times.iloc[-1]}): a time-ordered test set must come after the training rows"
            )
    n_train = len(df) - horizon
    if n_train < 2:
        raise ValueError(f"{len(df)} rows are too few to purge {horizon} bars")
    empty = np.arange(0)
    parts = Split("given", np.arange(n_train), empty, np.arange(len(test_df)), horizon, horizon)
    return parts, test_times


def span(prefix: str, times: pd.Series | None, rows: np.ndarray) -> dict[str, str]:
    """``<prefix>_start``/``<prefix>_end``: the first and last time of ``rows`` ({} untimed)."""
    if times is None or not len(rows):
        return {}
    t = times.iloc[rows]
    return {f"{prefix}_start": t.iloc[0].isoformat(), f"{prefix}_end": t.iloc[-1].isoformat()}
