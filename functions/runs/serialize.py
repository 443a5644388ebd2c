"""Turning the objects a job logs into bytes (and back): figures, frames, models.

Models: scikit-learn estimators are saved with joblib (a pickle: load only models from stores
you trust) together with the scikit-learn version that wrote them; XGBoost models in XGBoost's
own JSON (or UBJ) format, which is portable across XGBoost versions and needs no pickle.
"""

from __future__ import annotations

import io
import json
import math
import platform
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, BadRequestError

PREVIEW_ROWS = 20
TEXT_PREVIEW_CHARS = 2000
FRAME_FORMATS = ("parquet", "csv", "json")


def jsonable(value: Any) -> Any:
    """A JSON-safe version of a result value (numpy scalars → Python, NaN → None)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    for attr in ("item", "tolist"):  # numpy scalars and arrays
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                return jsonable(fn())
            except (TypeError, ValueError):
                continue
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def is_figure(obj: Any) -> bool:
    return type(obj).__module__.startswith("matplotlib") and hasattr(obj, "savefig")


def is_frame(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and type(obj).__module__.startswith("pandas")


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=100)
    return buf.getvalue()


def frame_bytes(df: Any, fmt: str) -> bytes:
    if fmt == "parquet":
        return _parquet_bytes(df)
    if fmt == "csv":
        return str(df.to_csv(index=False)).encode()
    if fmt == "json":
        return str(df.to_json(orient="records", date_format="iso")).encode()
    raise BadRequestError(f"unknown table format {fmt!r}; use one of {', '.join(FRAME_FORMATS)}")


def _parquet_bytes(df: Any) -> bytes:
    """What ``df.to_parquet(index=False)`` writes (the same schema and pandas metadata), with
    the conversion on this thread: pandas lets pyarrow start a thread pool for it on every
    call, which cost more than it saved (16.2 against 12.8 ms for the 14,400 x 30 test set
    auto_trainer logs, on a helper thread beside the metrics)."""
    import warnings

    import pyarrow as pa
    import pyarrow.parquet as pq

    with warnings.catch_warnings():
        # as pandas' to_parquet: pyarrow reads .values of timezone-aware columns (GH#68426)
        warnings.filterwarnings(
            "ignore", r"(Series|DatetimeIndex)\.values returning an ndarray that drops"
        )
        table = pa.Table.from_pandas(df, preserve_index=False, nthreads=1)
    if df.attrs:
        meta = {**(table.schema.metadata or {}), b"PANDAS_ATTRS": json.dumps(df.attrs).encode()}
        table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    # Dictionary-encoding float columns is most of the write time (4x) and rarely pays off in
    # size for measured values; other columns keep it.
    keep = [str(c) for c, t in df.dtypes.items() if t.kind not in "fc"]
    pq.write_table(table, buf, compression="snappy", use_dictionary=keep or False)
    return buf.getvalue()


def frame_preview(df: Any, rows: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(
        df.head(rows).to_json(orient="records", date_format="iso")
    )
    return out


_NUMERIC_STATS = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")


def _numeric_stats(df: Any, columns: list[Any]) -> dict[Any, dict[str, Any]]:
    """pandas ``describe`` for int/float columns, computed for all of them at once in numpy
    (describe's per-column overhead made logging a test set cost more than the fit)."""
    import warnings

    import numpy as np

    arr = df[columns].to_numpy(dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN or 1-value columns
        count = (~np.isnan(arr)).sum(axis=0).astype(np.float64)
        q25, q50, q75 = quartiles(arr, count)
        rows = (
            count,
            np.nanmean(arr, axis=0),
            np.nanstd(arr, axis=0, ddof=1),
            np.nanmin(arr, axis=0),
            q25,
            q50,
            q75,
            np.nanmax(arr, axis=0),
        )
    table = np.vstack(rows).T.tolist()
    return {
        col: {k: v for k, v in zip(_NUMERIC_STATS, values, strict=True) if not math.isnan(v)}
        for col, values in zip(columns, table, strict=True)
    }


def _counted(dtype: Any) -> bool:
    """Text, booleans and categories: the columns ``describe`` counts values of (object,
    string and category dtypes are kind O, Arrow strings U, booleans of every storage b)."""
    return dtype.kind in "bOU"


def _counted_stats(col: Any) -> dict[str, Any]:
    """``describe``'s count, unique, top and freq of one column, from its ``value_counts``
    as ``describe`` takes them; without describe's frame building around it (11 against 3 ms
    for the 14,400 timestamps of the test set auto_trainer logs)."""
    import numpy as np

    counts = col.value_counts()  # most frequent first
    freqs = counts.to_numpy()
    # Not counts[counts != 0] (a category nobody has): indexing builds the index's hash table.
    unique = int(np.count_nonzero(freqs))
    out: dict[str, Any] = {"count": jsonable(col.count()), "unique": unique}
    if unique:
        out["top"] = jsonable(counts.index[0])
        out["freq"] = jsonable(freqs[0])
    return out


def quartiles(arr: Any, count: Any) -> Any:
    """``np.nanpercentile(arr, [25, 50, 75], axis=0)`` (the default linear method), given each
    column's count of non-NaN values: one sort of the whole array, where nanpercentile loops
    over the columns in Python (2.3 against 10.5 ms for 14,400 x 31, the test set auto_trainer
    logs). The same index, weight and interpolation arithmetic as numpy's, so the same bits."""
    import numpy as np

    ordered = np.sort(arr, axis=0)  # NaNs last: each column's first count values are its own
    q = np.array([[0.25], [0.5], [0.75]])
    virtual = (count - 1) * q
    below = np.floor(virtual)
    last = count - 1 <= virtual  # at or past the last value: numpy takes it for both bounds
    top = np.maximum(count - 1, 0)
    lo = np.where(last, top, below).astype(np.intp)
    hi = np.where(last, top, below + 1).astype(np.intp)
    gamma = virtual - below
    a = np.take_along_axis(ordered, lo, axis=0)
    b = np.take_along_axis(ordered, hi, axis=0)
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    out[:, count == 0] = np.nan
    return out


def _dup_index(df: Any) -> list[tuple[Any, int]]:
    """Each column label with how many times it occurred before."""
    seen: dict[Any, int] = {}
    out = []
    for c in df.columns:
        out.append((c, seen.get(c, 0)))
        seen[c] = seen.get(c, 0) + 1
    return out


def frame_stats(df: Any) -> dict[str, Any]:
    """Shape, schema and per-column statistics (pandas ``describe``), JSON-safe."""
    stats: dict[str, Any] = {}
    if len(df.columns) and len(df):
        if not df.columns.is_unique:  # label lookups would return frames: number them
            df = df.set_axis([f"{c}.{i}" if i else str(c) for c, i in _dup_index(df)], axis=1)
        numeric = [c for c, t in df.dtypes.items() if t.kind in "iuf"]
        found = _numeric_stats(df, numeric) if numeric else {}
        for col, t in df.dtypes.items():
            if col not in found and _counted(t):
                found[col] = _counted_stats(df[col])
        others = [c for c in df.columns if c not in found]
        if others:  # datetimes, timedeltas and the rarer kinds: describe's own figures
            desc = df[others].describe(include="all")
            for col in desc.columns:
                found[col] = {str(k): jsonable(v) for k, v in desc[col].dropna().items()}
        stats = {str(c): found[c] for c in df.columns if c in found}
    return {
        "rows": len(df),
        "columns": len(df.columns),
        "schema": {str(c): str(t) for c, t in df.dtypes.items()},
        "stats": stats,
        "missing": {str(c): int(n) for c, n in df.isna().sum().items() if n},
    }


def text_preview(data: bytes) -> str | None:
    head = data[:TEXT_PREVIEW_CHARS]
    try:
        return head.decode()
    except UnicodeDecodeError:
        return None


# -- models ------------------------------------------------------------------------------------


def detect_framework(model: Any) -> str:
    mod = type(model).__module__
    if mod.startswith("xgboost"):
        return "xgboost"
    if mod.startswith("sklearn") or (hasattr(model, "fit") and hasattr(model, "get_params")):
        return "sklearn"
    raise BadRequestError(
        f"cannot tell the framework of {type(model).__name__}; pass framework='sklearn' or "
        "'xgboost'"
    )


def _feature_names(model: Any) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    if names is None and hasattr(model, "get_booster"):
        try:
            names = model.get_booster().feature_names
        except Exception:
            names = None
    if names is None:
        names = getattr(model, "feature_names", None)
    return [str(n) for n in names] if names is not None else None


def save_model(
    model: Any, framework: str, folder: Path, *, model_format: str | None = None
) -> tuple[Path, str, dict[str, Any]]:
    """Write ``model`` into ``folder``; returns (file, format, metadata)."""
    meta: dict[str, Any] = {
        "framework": framework,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "python_version": platform.python_version(),
    }
    names = _feature_names(model)
    if names:
        meta["feature_names"] = names
    if framework == "xgboost":
        import xgboost

        fmt = model_format or "json"
        if fmt not in ("json", "ubj"):
            raise BadRequestError("XGBoost models are saved as 'json' or 'ubj'")
        path = folder / f"model.{fmt}"
        model.save_model(str(path))
        meta["framework_version"] = xgboost.__version__
        return path, fmt, meta
    if framework == "sklearn":
        import joblib
        import sklearn

        path = folder / "model.joblib"
        joblib.dump(model, path)
        meta["framework_version"] = sklearn.__version__
        return path, "joblib", meta
    raise BadRequestError(f"unsupported model framework {framework!r} (sklearn, xgboost)")


def load_model_file(path: Path, meta: dict[str, Any]) -> Any:
    framework = meta.get("framework") or _framework_from_suffix(path)
    if framework == "xgboost":
        import xgboost

        cls_name = str(meta.get("model_class", "xgboost.core.Booster")).rsplit(".", 1)[-1]
        # Only XGBoost's own classes: the class name comes from stored metadata.
        cls = getattr(xgboost, cls_name, None)
        if not isinstance(cls, type) or not hasattr(cls, "load_model"):
            cls = xgboost.Booster
        model = cls()
        model.load_model(str(path))
        return model
    if framework == "sklearn":
        import joblib
        import sklearn

        saved = meta.get("framework_version")
        if saved and saved != sklearn.__version__:
            import logging

            logging.getLogger(__name__).warning(
                "model was saved with a different scikit-learn",
                extra={"saved_version": saved, "running_version": sklearn.__version__},
            )
        return joblib.load(path)
    raise ArtifactError(f"cannot load a model of framework {framework!r}")


def _framework_from_suffix(path: Path) -> str:
    if path.suffix in (".json", ".ubj"):
        return "xgboost"
    if path.suffix in (".joblib", ".pkl", ".pickle"):
        return "sklearn"
    raise ArtifactError(f"cannot tell the model framework of {path.name}")
