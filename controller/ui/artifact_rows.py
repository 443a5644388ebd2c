"""A page of a dataset's or table's rows, read from its stored bytes (csv, parquet, json).

The record's preview holds the first rows only (``PREVIEW_ROWS``); a reader who wants the rest
(the monitoring page's drift table has a row per feature, a dataset's tail) asks for a page.
Parquet reads only the row groups the page touches; CSV and JSON are parsed from the start.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from tickrun.functions.errors import BadRequestError

PAGE_FORMATS = ("csv", "parquet", "json")
MAX_PAGE_ROWS = 1000


@dataclass(frozen=True, slots=True)
class RowPage:
    columns: list[str]
    rows: list[dict[str, Any]]
    offset: int
    total: int


def _records(df: Any) -> list[dict[str, Any]]:
    # pandas' own JSON writer: NaN becomes null and timestamps ISO strings, as in the preview.
    out: list[dict[str, Any]] = json.loads(df.to_json(orient="records", date_format="iso"))
    return out


def _parquet(data: bytes, offset: int, limit: int) -> RowPage:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = pq.ParquetFile(io.BytesIO(data))
    total = f.metadata.num_rows
    columns = [str(c) for c in f.schema_arrow.names]
    groups: list[int] = []
    first = start = 0
    for i in range(f.num_row_groups):
        n = f.metadata.row_group(i).num_rows
        if start + n > offset and start < offset + limit:
            if not groups:
                first = start
            groups.append(i)
        start += n
    if not groups:
        return RowPage(columns, [], offset, total)
    table: pa.Table = f.read_row_groups(groups)
    page = table.slice(offset - first, limit).to_pandas()
    return RowPage(columns, _records(page), offset, total)


def page_rows(data: bytes, fmt: str, offset: int, limit: int) -> RowPage:
    """Rows ``offset`` .. ``offset + limit`` of a stored table in ``fmt``."""
    import pandas as pd

    if fmt not in PAGE_FORMATS:
        raise BadRequestError(
            f"rows of a {fmt or 'formatless'} artifact can't be paged: use one of "
            f"{', '.join(PAGE_FORMATS)}, or download it"
        )
    try:
        if fmt == "parquet":
            return _parquet(data, offset, limit)
        if fmt == "csv":
            df = pd.read_csv(io.BytesIO(data))
        else:
            df = pd.read_json(io.BytesIO(data), orient="records")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        # ArrowInvalid and pandas' ParserError are ValueErrors: a file that is not what its
        # record says.
        raise BadRequestError(f"the artifact's bytes are not a readable {fmt} table") from exc
    page = df.iloc[offset : offset + limit]
    return RowPage([str(c) for c in df.columns], _records(page), offset, len(df))


__all__ = ["MAX_PAGE_ROWS", "PAGE_FORMATS", "RowPage", "page_rows"]
