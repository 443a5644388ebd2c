"""Replaying a kline file into a Kafka topic as an exchange's websocket would send it.

``tickrun kafka replay FILE --topic T`` (:mod:`.replay_cli`) reads a Binance kline CSV (or
CSV.gz: ``open_time, open, high, low, close, volume, close_time, quote_volume, trades,
taker_buy_base, taker_buy_quote``, the shipped ``market_data(MINUTE)`` file) and produces one
Binance websocket kline event per bar, keyed by symbol::

    {"e": "kline", "E": event_ms, "s": "BTCUSDT",
     "k": {"t": open_ms, "T": close_ms, "s": "BTCUSDT", "i": "1m", "o": "42283.58", "h": …,
           "l": …, "c": …, "v": …, "n": 1327, "q": …, "V": …, "Q": …, "x": true}}

Prices and volumes stay the file's decimal strings, as Binance sends them.
``partial_updates=K`` sends K unclosed (``"x": false``) updates of each bar before its closed
one, as a live stream does while the bar forms. The file has no intra-bar ticks, so a partial
update is a synthetic point on the straight line from the bar's open to its close (its
high/low are the extremes of that path so far, volume and trade count pro rata): always within
the final bar's range, never the final values.

Pacing (:class:`Schedule`): ``speed`` times real time by the bars' event times, ``rate`` closed
klines per second (a bar's partial updates spread evenly before it), or as fast as the producer
goes. Each record carries the wall-clock time it was handed to the producer in the header
``x-tickrun-replay-ts`` (seconds since the epoch, text), so a consumer down a pipeline can
measure latency from it.

``redeliver_every=N`` re-sends the previous bar's closed kline after every N-th closed kline,
i.e. an older open time arriving after a newer one, as an at-least-once producer retry can:
for testing consumers' de-duplication.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickrun.functions.errors import SpecError, TriggerError

logger = logging.getLogger(__name__)

REPLAY_TS_HEADER = "x-tickrun-replay-ts"
REQUIRED = ("open_time", "open", "high", "low", "close", "volume")
# Binance's websocket field names for the CSV's optional columns.
_OPTIONAL = {"quote_volume": "q", "taker_buy_base": "V", "taker_buy_quote": "Q"}
INTERVALS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}


@dataclass(frozen=True, slots=True)
class Kline:
    """One bar of the file, numbers kept as the file's text."""

    symbol: str
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    trades: int
    extra: tuple[tuple[str, str], ...] = ()


def _interval_ms(interval: str) -> int:
    try:
        return INTERVALS[interval]
    except KeyError:
        raise SpecError(f"interval {interval!r}: one of {', '.join(INTERVALS)}") from None


def read_klines(
    path: str | Path,
    *,
    symbol: str = "BTCUSDT",
    interval: str = "1m",
    offset: int = 0,
    limit: int | None = None,
) -> Iterator[Kline]:
    """Bars of a Binance kline CSV/CSV.gz, streamed (the file is never loaded whole).

    A ``symbol`` column, when present, overrides ``symbol`` per row; a missing ``close_time`` is
    ``open_time + interval - 1`` as Binance defines it."""
    step = _interval_ms(interval)
    path = Path(path)
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        fh: io.TextIOBase = opener(path, "rt", newline="", encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
        if missing:
            raise SpecError(f"{path}: not a kline file, missing column(s) {', '.join(missing)}")
        sent = 0
        for i, row in enumerate(reader):
            if i < offset:
                continue
            if limit is not None and sent >= limit:
                return
            yield _kline(row, symbol, step, path, i)
            sent += 1


def _kline(row: Mapping[str, str], symbol: str, step: int, path: Path, i: int) -> Kline:
    try:
        open_time = int(float(row["open_time"]))
        close_raw = row.get("close_time")
        close_time = int(float(close_raw)) if close_raw else open_time + step - 1
        trades = int(float(row.get("trades") or 0))
        for col in ("open", "high", "low", "close", "volume"):
            float(row[col])  # a bad number fails here, with the row, not in a consumer
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{path}: row {i + 1} is not a kline: {exc}") from exc
    extra = tuple((key, row[col]) for col, key in _OPTIONAL.items() if row.get(col))
    return Kline(
        symbol=row.get("symbol") or symbol,
        open_time=open_time,
        close_time=close_time,
        open=row["open"],
        high=row["high"],
        low=row["low"],
        close=row["close"],
        volume=row["volume"],
        trades=trades,
        extra=extra,
    )


def _fmt(x: float) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".") or "0"


def _event(
    kline: Kline,
    interval: str,
    *,
    at: int,
    high: str,
    low: str,
    close: str,
    volume: str,
    trades: int,
    closed: bool,
) -> dict[str, Any]:
    """A websocket kline event of ``kline``'s bar sent at ``at`` (ms), with the bar's figures so
    far: a closed bar's or an unclosed update's."""
    k: dict[str, Any] = {
        "t": kline.open_time,
        "T": kline.close_time,
        "s": kline.symbol,
        "i": interval,
        "o": kline.open,
        "h": high,
        "l": low,
        "c": close,
        "v": volume,
        "n": trades,
        "x": closed,
    }
    return {"e": "kline", "E": at, "s": kline.symbol, "k": k}


def kline_event(kline: Kline, *, interval: str = "1m") -> dict[str, Any]:
    """The closed bar as Binance's websocket kline event."""
    event = _event(
        kline,
        interval,
        at=kline.close_time + 1,
        high=kline.high,
        low=kline.low,
        close=kline.close,
        volume=kline.volume,
        trades=kline.trades,
        closed=True,
    )
    event["k"].update(dict(kline.extra))
    return event


def partial_events(kline: Kline, count: int, *, interval: str = "1m") -> list[dict[str, Any]]:
    """``count`` unclosed updates of the bar at fractions j/(count+1) of its duration (see the
    module docstring for why they are a straight path from open to close)."""
    if count <= 0:
        return []
    o, c = float(kline.open), float(kline.close)
    v = float(kline.volume)
    span = kline.close_time + 1 - kline.open_time
    out = []
    for j in range(1, count + 1):
        f = j / (count + 1)
        price = o + (c - o) * f
        out.append(
            _event(
                kline,
                interval,
                at=kline.open_time + int(span * f),
                high=_fmt(max(o, price)),
                low=_fmt(min(o, price)),
                close=_fmt(price),
                volume=_fmt(v * f),
                trades=int(kline.trades * f),
                closed=False,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Message:
    """One record to produce: its event, the bar it belongs to, and when to send it (seconds
    after the replay's start, by the schedule)."""

    event: dict[str, Any]
    bar: int
    closed: bool
    redelivery: bool
    at_s: float


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each record goes: ``speed`` (times real time, by event times), ``rate`` (closed klines
    per second) or neither (as fast as possible). Exactly one of speed/rate, or none."""

    speed: float | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.speed is not None and self.rate is not None:
            raise SpecError("give one of speed and rate, not both")
        for name in ("speed", "rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SpecError(f"{name} must be positive, got {value}")

    def at(self, event_ms: int, first_ms: int, bar: int, fraction: float) -> float:
        """Seconds after the start: by event time (speed), by bar position (rate), or 0."""
        if self.speed is not None:
            return (event_ms - first_ms) / 1000.0 / self.speed
        if self.rate is not None:
            # A bar's closed kline is due at (bar + 1) / rate, its partials before it.
            return (bar + fraction) / self.rate
        return 0.0


def messages(
    klines: Iterable[Kline],
    *,
    schedule: Schedule = Schedule(),
    partial_updates: int = 0,
    redeliver_every: int = 0,
    interval: str = "1m",
) -> Iterator[Message]:
    """The records of a replay, in sending order, each with its due time."""
    first_ms: int | None = None
    previous: dict[str, Any] | None = None
    for bar, kline in enumerate(klines):
        if first_ms is None:
            first_ms = kline.open_time
        n = partial_updates + 1
        for j, event in enumerate(partial_events(kline, partial_updates, interval=interval)):
            at = schedule.at(event["E"], first_ms, bar, (j + 1) / n)
            yield Message(event, bar, closed=False, redelivery=False, at_s=at)
        event = kline_event(kline, interval=interval)
        at = schedule.at(event["E"], first_ms, bar, 1.0)
        yield Message(event, bar, closed=True, redelivery=False, at_s=at)
        if redeliver_every and previous is not None and (bar + 1) % redeliver_every == 0:
            yield Message(previous, bar - 1, closed=True, redelivery=True, at_s=at)
        previous = event


class Pacer:
    """Sleeps until a message's due time; ``clock``/``sleep`` are injectable for tests."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._start = clock()

    def wait(self, at_s: float) -> float:
        """Sleep until ``at_s`` seconds after the start; returns how long it slept."""
        delay = self._start + at_s - self._clock()
        if delay > 0:
            self._sleep(delay)
            return delay
        return 0.0


@dataclass
class ReplayStats:
    klines: int = 0
    partials: int = 0
    redeliveries: int = 0
    messages: int = 0
    seconds: float = 0.0
    first_open_time: int | None = None
    last_open_time: int | None = None
    sent_at: dict[tuple[str, int], float] = field(default_factory=dict, repr=False)

    @property
    def klines_per_s(self) -> float:
        return self.klines / self.seconds if self.seconds > 0 else float("inf")


Sender = Callable[[bytes, bytes, list[tuple[str, bytes]]], None]
Progress = Callable[[ReplayStats], None]


def replay(
    klines: Iterable[Kline],
    send: Sender,
    *,
    schedule: Schedule = Schedule(),
    partial_updates: int = 0,
    redeliver_every: int = 0,
    interval: str = "1m",
    pacer: Pacer | None = None,
    progress: Progress | None = None,
    progress_every_s: float = 2.0,
    wall_clock: Callable[[], float] = time.time,
    record_sent: bool = False,
) -> ReplayStats:
    """Send a replay's records through ``send(key, value, headers)`` at the schedule's pace.

    ``record_sent`` keeps the wall time each closed kline was handed over, by (symbol, open
    time), in ``stats.sent_at`` (what a latency benchmark measures from)."""
    if partial_updates < 0 or redeliver_every < 0:
        raise SpecError("partial_updates and redeliver_every must not be negative")
    pacer = pacer or Pacer()
    stats = ReplayStats()
    started = time.monotonic()
    last_report = started
    for msg in messages(
        klines,
        schedule=schedule,
        partial_updates=partial_updates,
        redeliver_every=redeliver_every,
        interval=interval,
    ):
        pacer.wait(msg.at_s)
        symbol = msg.event["s"]
        now = wall_clock()
        value = json.dumps(msg.event, separators=(",", ":")).encode()
        send(symbol.encode(), value, [(REPLAY_TS_HEADER, repr(now).encode())])
        stats.messages += 1
        if msg.redelivery:
            stats.redeliveries += 1
        elif msg.closed:
            stats.klines += 1
            open_time = int(msg.event["k"]["t"])
            if stats.first_open_time is None:
                stats.first_open_time = open_time
            stats.last_open_time = open_time
            if record_sent:
                stats.sent_at[(symbol, open_time)] = now
        else:
            stats.partials += 1
        if progress is not None and time.monotonic() - last_report >= progress_every_s:
            last_report = time.monotonic()
            stats.seconds = last_report - started
            progress(stats)
    stats.seconds = time.monotonic() - started
    return stats


class TopicSender:
    """A kafka-python producer behind the :data:`Sender` signature; ``close()`` flushes."""

    def __init__(self, brokers: Iterable[str], topic: str, **options: Any) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topic = topic
        self._errors: list[BaseException] = []
        config: dict[str, Any] = {"acks": "all", "linger_ms": 5, "retries": 5}
        config.update(options)
        try:
            self._producer = KafkaProducer(bootstrap_servers=list(brokers), **config)
        except KafkaError as exc:
            raise TriggerError(f"cannot connect to Kafka at {','.join(brokers)}: {exc}") from exc

    def __call__(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self._errors:
            raise TriggerError(f"producing to {self.topic!r} failed: {self._errors[0]}")
        future = self._producer.send(self.topic, value=value, key=key, headers=headers)
        future.add_errback(self._errors.append)

    def close(self, timeout_s: float = 60.0) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        finally:
            self._producer.close(timeout=timeout_s)
        if self._errors:
            raise TriggerError(f"producing to {self.topic!r} failed: {self._errors[0]}")
