"""paper_trader 1.0.0 — paper trading on a Kafka stream of model signals, and its report job.

Streaming (``handler``, a ``kafka-cluster`` trigger on the signals topic, ``outputTopic`` the
pnl topic): each message ``{"symbol", "open_time", "close", "signal"[, "probability"]}`` is one
closed bar of one symbol. Per symbol the rules are:

1. mark to market: ``gross_pnl += position * (close - previous close)``;
2. when ``signal`` (-1, 0 or 1) differs from the side held, trade at this close to
   ``signal * NOTIONAL / close`` units; the fill pays ``|units traded| * close * FEE_BP / 1e4``;
3. publish the fill (``{"type": "fill", …}``, only when it traded) and the mark
   (``{"type": "mark", …}``, every bar; cumulative ``gross_pnl``, ``fees``, ``net_pnl``,
   ``trades``, the ``position`` in units and its ``exposure`` at the close).

A signal whose open time is not newer than the last one of its symbol (a redelivery, at least
once upstream) changes nothing and publishes nothing. A message that is not a signal raises
``ValueError``: the trigger retries it, then dead-letters it, and the stream goes on.

Why a report job and not ``context.log_*`` in the replica: a tracked run needs the run DB's (or
the controller's) credentials, and a deployed function must not hold them. The replica only
produces to Kafka; ``report`` (``tickrun run hub://paper_trader#report`` or
``HubFunction.run("report")``) runs where the user's run DB is, reads the pnl topic from its
start to its current end, and logs the results, the marks table and an equity plot.

State lives in the worker's memory (one replica, one worker, ``maxWorkers: 1``). With
``RESTORE_TOPIC`` (the pnl topic) and ``RESTORE_BROKERS`` set, ``init_context`` reads that topic to
its end and resumes each symbol's book from its last mark, so a replica killed mid-stream carries
on where its published marks stop (without them it restarts flat). Why that is exact: the trigger
flushes the marks a signal produced before committing the signal's offset, so every signal the
restarted replica is handed again either has its mark on the topic already (its open time is then
not newer than the restored one: skipped) or has none (handled now, as the first time would have).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# --- the book (pure) -------------------------------------------------------------------------


@dataclass
class Position:
    units: float = 0.0
    side: int = 0
    last_close: float | None = None
    last_open_time: int | None = None
    gross_pnl: float = 0.0
    fees: float = 0.0
    trades: int = 0


class PaperBook:
    """Positions per symbol under the rules of the module docstring."""

    def __init__(self, notional: float = 10_000.0, fee_bp: float = 10.0) -> None:
        if not notional > 0 or fee_bp < 0:
            raise ValueError("NOTIONAL must be positive and FEE_BP not negative")
        self.notional = notional
        self.fee_rate = fee_bp / 10_000.0
        self.positions: dict[str, Position] = {}
        self._lock = threading.Lock()

    def on_signal(
        self, symbol: str, open_time: int, close: float, signal: int
    ) -> tuple[dict[str, Any] | None, dict[str, Any]] | None:
        """(fill or None, mark) for a new bar; None for a bar already seen."""
        if signal not in (-1, 0, 1):
            raise ValueError(f"signal must be -1, 0 or 1, got {signal!r}")
        if not (math.isfinite(close) and close > 0):
            raise ValueError(f"close must be a positive price, got {close!r}")
        with self._lock:
            pos = self.positions.setdefault(symbol, Position())
            if pos.last_open_time is not None and open_time <= pos.last_open_time:
                return None
            if pos.last_close is not None:
                pos.gross_pnl += pos.units * (close - pos.last_close)
            pos.last_close = close
            pos.last_open_time = open_time
            fill = None
            if signal != pos.side:
                target = signal * self.notional / close
                traded = target - pos.units
                fee = abs(traded) * close * self.fee_rate
                pos.fees += fee
                pos.trades += 1
                pos.units, pos.side = target, signal
                fill = {
                    "type": "fill",
                    "symbol": symbol,
                    "open_time": open_time,
                    "price": close,
                    "units": traded,
                    "fee": fee,
                    "position": target,
                }
            mark = {
                "type": "mark",
                "symbol": symbol,
                "open_time": open_time,
                "close": close,
                "signal": signal,
                "position": pos.units,
                "exposure": pos.units * close,
                "gross_pnl": pos.gross_pnl,
                "fees": pos.fees,
                "net_pnl": pos.gross_pnl - pos.fees,
                "trades": pos.trades,
            }
            return fill, mark


def restore(book: PaperBook, records: list[dict[str, Any]]) -> int:
    """Resume ``book`` from the last mark of each symbol in ``records``; returns the symbols."""
    last: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("type") != "mark":
            continue
        sym = str(rec["symbol"])
        if sym not in last or int(rec["open_time"]) >= int(last[sym]["open_time"]):
            last[sym] = rec
    for sym, mark in last.items():
        book.positions[sym] = Position(
            units=float(mark["position"]),
            side=int(mark["signal"]),  # after a bar the side held is that bar's signal
            last_close=float(mark["close"]),
            last_open_time=int(mark["open_time"]),
            gross_pnl=float(mark["gross_pnl"]),
            fees=float(mark["fees"]),
            trades=int(mark["trades"]),
        )
    return len(last)


def parse_signal(body: Any) -> tuple[str, int, float, int]:
    """(symbol, open time ms, close, signal) of a signal message; ValueError otherwise."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"not a signal message (not JSON): {exc}") from exc
    if not isinstance(body, Mapping):
        raise ValueError("not a signal message: expected a JSON object")
    try:
        return (
            str(body["symbol"]),
            int(body["open_time"]),
            float(body["close"]),
            int(body["signal"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a signal message: bad or missing {exc}") from exc


# --- Nuclio streaming handler ----------------------------------------------------------------


def init_context(context: Any) -> None:
    book = PaperBook(
        float(os.environ.get("NOTIONAL") or 10_000), float(os.environ.get("FEE_BP") or 10)
    )
    topic = os.environ.get("RESTORE_TOPIC")
    if topic:
        raw = os.environ.get("RESTORE_BROKERS") or os.environ.get("TICKRUN_KAFKA_BROKERS") or ""
        brokers = [b.strip() for b in raw.split(",") if b.strip()]
        if not brokers:
            raise ValueError("RESTORE_TOPIC needs RESTORE_BROKERS (host:port,…)")
        # A topic not created yet means nothing was published: start flat. Any other failure
        # raises, so the replica does not start with a book that forgot its positions.
        records = read_topic(brokers, topic, timeout_s=30.0, missing_ok=True)
        symbols = restore(book, records)
        context.logger.info_with("book restored", topic=topic, symbols=symbols)
    context.user_data.book = book


def handler(context: Any, event: Any) -> Any:
    symbol, open_time, close, signal = parse_signal(event.body)
    out = context.user_data.book.on_signal(symbol, open_time, close, signal)
    if out is None:
        return None  # a redelivered bar: nothing new to publish
    fill, mark = out
    if fill is not None:
        # Same topic and key as the mark, published first: the fill precedes its mark.
        context.kafka.publish(fill, key=symbol)
    return mark


# --- report job ------------------------------------------------------------------------------


def read_topic(
    brokers: list[str],
    topic: str,
    *,
    expect_marks: int = 0,
    timeout_s: float = 60.0,
    missing_ok: bool = False,
) -> list[dict[str, Any]]:
    """Every JSON record of ``topic`` from its start to its end (the end read again while
    fewer than ``expect_marks`` distinct marks arrived, up to ``timeout_s``). A topic that does
    not exist is an error, or no records with ``missing_ok``."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=brokers, enable_auto_commit=False, consumer_timeout_ms=500
    )
    records: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout_s
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions and missing_ok and topic not in consumer.topics():
            return records
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while True:
            end = consumer.end_offsets(tps)
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for batch in consumer.poll(timeout_ms=500).values():
                    for rec in batch:
                        try:
                            value = json.loads(rec.value)
                        except (TypeError, ValueError):
                            continue  # not ours; the report reads only JSON fills and marks
                        if isinstance(value, dict):
                            records.append(value)
                            if value.get("type") == "mark":
                                seen.add((str(value.get("symbol")), int(value["open_time"])))
                if time.monotonic() > deadline:
                    break
            if len(seen) >= expect_marks or time.monotonic() > deadline:
                return records
            time.sleep(0.2)
    finally:
        consumer.close()


def summarize(
    records: list[dict[str, Any]], symbol: str | None = None
) -> tuple[dict[str, Any], Any]:
    """(results, marks frame) from the pnl topic's records: the last mark per (symbol, open
    time), PnL summed over symbols bar by bar."""
    import pandas as pd

    marks = pd.DataFrame([r for r in records if r.get("type") == "mark"])
    if symbol is not None and not marks.empty:
        marks = marks[marks["symbol"] == symbol]
    if marks.empty:
        raise ValueError("no marks on the pnl topic (is the trader deployed and fed?)")
    marks = (
        marks.drop_duplicates(["symbol", "open_time"], keep="last")
        .sort_values(["open_time", "symbol"])
        .reset_index(drop=True)
    )
    # Each symbol's cumulative figures carried forward, summed per bar.
    wide = marks.pivot(index="open_time", columns="symbol")
    net = wide["net_pnl"].ffill().fillna(0.0).sum(axis=1)
    exposure = wide["exposure"].ffill().fillna(0.0).sum(axis=1)
    last = marks.groupby("symbol").tail(1)
    drawdown = (net.cummax() - net).max()
    results = {
        "net_pnl": float(last["net_pnl"].sum()),
        "gross_pnl": float(last["gross_pnl"].sum()),
        "fees": float(last["fees"].sum()),
        "trades": int(last["trades"].sum()),
        "bars": len(marks),
        "final_exposure": float(last["exposure"].sum()),
        "max_abs_exposure": float(exposure.abs().max()),
        "mean_abs_exposure": float(exposure.abs().mean()),
        "max_drawdown": float(drawdown),
        "symbols": ",".join(sorted(last["symbol"].astype(str))),
    }
    return results, marks.assign(total_net_pnl=marks["open_time"].map(net))


def _equity_figure(marks: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(figsize=(9, 4))
    for sym, group in marks.groupby("symbol"):
        when = pd.to_datetime(group["open_time"], unit="ms", utc=True)
        ax.plot(when, group["net_pnl"], label=f"{sym} net")
        ax.plot(when, group["gross_pnl"], linestyle=":", label=f"{sym} gross")
    ax.set_title("paper trading: PnL marked to market (quote currency)")
    ax.legend()
    fig.autofmt_xdate()
    return fig


def report(
    context: Any,
    topic: str,
    brokers: str | None = None,
    symbol: str | None = None,
    expect_marks: int = 0,
    timeout_s: float = 60.0,
    plot: bool = True,
) -> None:
    """Job: the pnl topic → results (net/gross PnL, fees, trades, exposure, drawdown), the
    marks table and an equity plot."""
    raw = brokers or os.environ.get("TICKRUN_KAFKA_BROKERS") or ""
    broker_list = [b.strip() for b in raw.split(",") if b.strip()]
    if not broker_list:
        raise ValueError("give brokers= or set TICKRUN_KAFKA_BROKERS")
    records = read_topic(
        broker_list, topic, expect_marks=int(expect_marks), timeout_s=float(timeout_s)
    )
    results, marks = summarize(records, symbol)
    fills = {(r.get("symbol"), r.get("open_time")) for r in records if r.get("type") == "fill"}
    results["fills"] = len(fills)
    context.log_results(results)
    context.log_dataset("marks", marks, format="csv")
    if plot:
        import matplotlib.pyplot as plt

        fig = _equity_figure(marks)
        context.log_artifact("equity", fig)
        plt.close(fig)
