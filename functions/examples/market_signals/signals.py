"""Moving-average crossover signals from a stream of klines (a Kafka-triggered function).

Input: one kline per record, JSON, either a flat row as in the bundled ``hub/data`` files
(``open_time``, ``open``, ``high``, ``low``, ``close``, ``volume``, …) or Binance's websocket form
``{"s": "BTCUSDT", "k": {"t": …, "c": "…", …}}``. The record key is the symbol (klines of one
symbol stay in one partition, so they arrive in order).

Output: when the fast SMA of closes crosses the slow one, the handler returns
``{"symbol", "time", "close", "fast", "slow", "signal": "buy"|"sell"}``; the Kafka trigger
produces that return value to its ``outputTopic`` (``None`` → nothing is produced). A one-minute
move larger than ``ALERT_MOVE`` is also published explicitly with
``context.kafka.publish(..., topic=ALERT_TOPIC)``.

A record that is not a kline raises ``ValueError``: the trigger retries it, then sends it to
the dead-letter topic and goes on.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import deque
from typing import Any


class _Series:
    """Recent closes of one symbol and the last crossover state."""

    def __init__(self, slow: int) -> None:
        self.closes: deque[float] = deque(maxlen=slow)
        self.above: bool | None = None
        self.last_time = -1


def init_context(context: Any) -> None:
    context.user_data.fast = int(os.environ.get("FAST_WINDOW", "5"))
    context.user_data.slow = int(os.environ.get("SLOW_WINDOW", "20"))
    context.user_data.alert_topic = os.environ.get("ALERT_TOPIC") or None
    context.user_data.alert_move = float(os.environ.get("ALERT_MOVE", "0.01"))
    context.user_data.series = {}
    # Different partitions (symbols) may be handled by parallel threads.
    context.user_data.lock = threading.Lock()


def parse_kline(body: Any, key: bytes | None) -> tuple[str, int, float, float]:
    """(symbol, open time ms, open, close) of a kline in either supported shape."""
    if not isinstance(body, dict):
        raise ValueError("kline must be a JSON object")
    if "k" in body:  # Binance websocket stream
        k = body["k"]
        return str(body.get("s") or k.get("s")), int(k["t"]), float(k["o"]), float(k["c"])
    symbol = body.get("symbol") or (key.decode() if key else "BTCUSDT")
    try:
        return str(symbol), int(body["open_time"]), float(body["open"]), float(body["close"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"kline is missing a field: {exc}") from exc


def handler(context: Any, event: Any) -> dict[str, Any] | None:
    symbol, open_time, open_, close = parse_kline(event.body, getattr(event, "key", None))
    ud = context.user_data
    if ud.alert_topic and open_ > 0 and abs(close / open_ - 1) >= ud.alert_move:
        context.kafka.publish(
            {"symbol": symbol, "time": open_time, "move": round(close / open_ - 1, 5)},
            topic=ud.alert_topic,
            key=symbol,
        )
    with ud.lock:
        series = ud.series.get(symbol)
        if series is None:
            series = ud.series[symbol] = _Series(ud.slow)
        if open_time <= series.last_time:  # a redelivered kline (at-least-once): no new signal
            return None
        series.last_time = open_time
        series.closes.append(close)
        if len(series.closes) < ud.slow:
            return None
        closes = list(series.closes)
        fast = sum(closes[-ud.fast :]) / ud.fast
        slow = sum(closes) / len(closes)
        above = fast > slow
        crossed = series.above is not None and above != series.above
        series.above = above
    if not crossed:
        return None
    return {
        "symbol": symbol,
        "time": dt.datetime.fromtimestamp(open_time / 1000, dt.UTC).isoformat(),
        "close": close,
        "fast": round(fast, 2),
        "slow": round(slow, 2),
        "signal": "buy" if above else "sell",
    }
