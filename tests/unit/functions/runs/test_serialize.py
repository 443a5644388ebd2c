"""Dataset statistics: the numpy path gives what pandas ``describe`` gives."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickrun.functions.runs.serialize import frame_bytes, frame_stats, jsonable, quartiles


def _describe(df: pd.DataFrame) -> dict[str, dict[str, object]]:
    desc = df.describe(include="all")
    return {str(c): {str(k): jsonable(v) for k, v in desc[c].dropna().items()} for c in desc}


def test_stats_equal_pandas_describe_for_every_column_kind() -> None:
    rng = np.random.default_rng(1)
    n = 500
    df = pd.DataFrame(
        {
            "price": rng.normal(100, 5, n),
            "trades": rng.integers(0, 90, n),
            "side": ["buy", "sell"] * (n // 2),
            "up": [True, False] * (n // 2),
            "empty": [np.nan] * n,
            "once": [1.5] + [np.nan] * (n - 1),
            "at": pd.date_range("2024-01-01", periods=n, freq="h"),
            # counted columns: text of every storage, ties, categories nobody has, NA
            "stamp": pd.Series([f"t{i:04d}" for i in range(n)], dtype="string[pyarrow]"),
            "code": pd.Series(["x", "y", None, "y"] * (n // 4), dtype=pd.ArrowDtype(pa.string())),
            "venue": pd.Categorical(["a", "b", "b", "a", "c"] * (n // 5), ["a", "b", "c", "z"]),
            "flag": pd.array([True, None, False, False] * (n // 4), dtype="boolean"),
            "note": pd.Series([None] * n, dtype=object),
            "mixed": pd.Series(["x", 1, "x", None] * (n // 4), dtype=object),
        }
    )
    df.loc[3, "price"] = np.nan
    got = frame_stats(df)
    expected = _describe(df)
    assert list(got["stats"]) == list(expected), "every column, in frame order"
    for col, stats in expected.items():
        assert set(got["stats"][col]) == set(stats), col
        for key, value in stats.items():
            if isinstance(value, float):
                assert math.isclose(got["stats"][col][key], value, rel_tol=1e-12), (col, key)
            else:
                assert got["stats"][col][key] == value, (col, key)
    assert got["missing"] == {
        "price": 1,
        "empty": n,
        "once": n - 1,
        "code": n // 4,
        "flag": n // 4,
        "note": n,
        "mixed": n // 4,
    }
    assert (got["rows"], got["columns"]) == (n, 13)


def test_duplicate_column_names_still_get_stats() -> None:
    df = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], columns=["x", "x"])
    stats = frame_stats(df)["stats"]
    assert (stats["x"]["mean"], stats["x.1"]["mean"]) == (2.0, 3.0)


def test_quartiles_are_numpys_nanpercentile_to_the_bit() -> None:
    rng = np.random.default_rng(3)
    for trial in range(200):
        arr = rng.normal(size=(int(rng.integers(1, 60)), int(rng.integers(1, 8))))
        arr *= 10.0 ** int(rng.integers(-3, 6))
        arr[rng.random(arr.shape) < rng.random()] = np.nan  # from no NaN to all-NaN columns
        if trial % 7 == 0:
            arr[rng.random(arr.shape) < 0.1] = np.inf
        if trial % 11 == 0:
            arr[rng.random(arr.shape) < 0.1] = -np.inf
        if trial % 5 == 0:
            arr = np.round(arr)  # ties
        count = (~np.isnan(arr)).sum(axis=0).astype(np.float64)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanpercentile(arr, [25, 50, 75], axis=0)
            got = quartiles(arr, count)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_parquet_is_what_pandas_writes() -> None:
    """Our own conversion (no thread pool) writes the schema, pandas metadata and rows that
    ``to_parquet(index=False)`` does, without the timezone warning pandas hides."""
    n = 40
    df = pd.DataFrame(
        {
            "at": pd.date_range("2024-01-01", periods=n, freq="h", tz="America/New_York"),
            "price": np.linspace(1.0, 2.0, n),
            "side": ["buy", "sell"] * (n // 2),
            "venue": pd.Categorical(["a", "b"] * (n // 2)),
            "qty": pd.array(range(n), dtype="Int64"),
        },
        index=pd.RangeIndex(100, 100 + n),
    )
    df.attrs = {"source": "test"}
    ours = io.BytesIO(frame_bytes(df, "parquet"))
    theirs = io.BytesIO()
    df.to_parquet(theirs, index=False, use_dictionary=["at", "side", "venue", "qty"])
    theirs.seek(0)
    assert pq.read_schema(ours).equals(pq.read_schema(theirs), check_metadata=True)
    ours.seek(0)
    theirs.seek(0)
    back = pd.read_parquet(ours)
    pd.testing.assert_frame_equal(back, pd.read_parquet(theirs))
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True))
    assert back.attrs == {"source": "test"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame_bytes(df, "parquet")


def test_an_unknown_table_format_is_refused() -> None:
    with pytest.raises(Exception, match="unknown table format"):
        frame_bytes(pd.DataFrame({"x": [1]}), "xlsx")
