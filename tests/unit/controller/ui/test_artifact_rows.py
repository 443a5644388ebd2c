"""Pages of a stored table's rows: csv, parquet (only the row groups a page touches), json."""

from __future__ import annotations

import io
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickrun.controller.ui.artifact_rows import page_rows
from tickrun.functions.errors import BadRequestError


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": range(n),
            "x": [float("nan") if i % 7 == 0 else i / 2 for i in range(n)],
            "t": pd.date_range("2025-01-01", periods=n, freq="h"),
        }
    )


def _parquet(df: pd.DataFrame, row_group_size: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(
        pa.Table.from_pandas(df, preserve_index=False), buf, row_group_size=row_group_size
    )
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_a_page_across_the_table(fmt: str) -> None:
    df = _frame(95)
    data = {
        "csv": lambda: df.to_csv(index=False).encode(),
        "parquet": lambda: _parquet(df, 10),
        "json": lambda: df.to_json(orient="records", date_format="iso").encode(),
    }[fmt]()
    page = page_rows(data, fmt, 25, 30)  # crosses row groups 2..5 of the parquet file
    assert page.total == 95 and page.offset == 25
    assert page.columns == ["i", "x", "t"]
    assert [r["i"] for r in page.rows] == list(range(25, 55))
    assert page.rows[3]["x"] is None  # i = 28: NaN is null, as in the preview
    assert page.rows[4]["x"] == 14.5
    # a csv has no types: its time column stays the text it was written as
    assert str(page.rows[0]["t"]).replace(" ", "T").startswith("2025-01-02T01:00:00")
    tail = page_rows(data, fmt, 90, 30)
    assert [r["i"] for r in tail.rows] == list(range(90, 95))
    past = page_rows(data, fmt, 500, 10)
    assert past.rows == [] and past.total == 95


def test_parquet_reads_only_the_row_groups_of_the_page() -> None:
    data = _parquet(_frame(1000), 10)
    f = pq.ParquetFile(io.BytesIO(data))
    assert f.num_row_groups == 100
    page = page_rows(data, "parquet", 995, 10)
    assert [r["i"] for r in page.rows] == list(range(995, 1000))
    assert not any(isinstance(r["x"], float) and math.isnan(r["x"]) for r in page.rows)


def test_other_formats_and_bad_bytes_are_400s() -> None:
    with pytest.raises(BadRequestError, match="can't be paged"):
        page_rows(b"whatever", "pkl", 0, 10)
    with pytest.raises(BadRequestError, match="not a readable parquet"):
        page_rows(b"not parquet", "parquet", 0, 10)
    with pytest.raises(BadRequestError, match="not a readable json"):
        page_rows(b"{oops", "json", 0, 10)
