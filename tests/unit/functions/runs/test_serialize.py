"""Dataset statistics: the numpy path gives what pandas ``describe`` gives."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from tickrun.functions.runs.serialize import frame_stats, jsonable, quartiles


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
    assert got["missing"] == {"price": 1, "empty": n, "once": n - 1}
    assert (got["rows"], got["columns"]) == (n, 7)


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
