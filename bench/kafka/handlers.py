"""The handler bodies both sides run: a no-op, and real work (a kline → one DataFrame row).

The same functions are called by the raw consumer loop and, through the function folders that
``__main__`` writes, by the tickrun Kafka trigger, so both sides do identical work per event.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

KLINE_DTYPES = {
    "open_time": "int64", "open": "float64", "high": "float64", "low": "float64",
    "close": "float64", "volume": "float64", "close_time": "int64",
    "quote_volume": "float64", "trades": "int64", "taker_buy_base": "float64",
    "taker_buy_quote": "float64",
}  # fmt: skip


def noop(body: Any) -> None:
    return None


def kline_row(body: dict[str, Any]) -> pd.DataFrame:
    """One typed DataFrame row with a UTC time index, as a feature pipeline would start."""
    frame = pd.DataFrame([body]).astype(KLINE_DTYPES)
    frame.index = pd.to_datetime(frame["open_time"], unit="ms", utc=True)
    return frame


def dataframe_work(body: dict[str, Any]) -> None:
    """The real-work handler body: build the row, return nothing (nothing to publish)."""
    kline_row(body)


HANDLER_CODE = """

{prefix}def handler(context, event):
    return {call}
"""


def function_code(call: str, is_async: bool = False) -> str:
    """This module's source plus a Nuclio handler making ``call``: the function folder's
    main.py (a function must not import the bench package from its own process)."""
    from pathlib import Path

    prefix = "async " if is_async else ""
    return Path(__file__).read_text(encoding="utf-8") + HANDLER_CODE.format(
        call=call, prefix=prefix
    )
