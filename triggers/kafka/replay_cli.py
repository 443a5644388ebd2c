"""``tickrun kafka replay FILE --topic T``: a kline file into a topic at a chosen pace.

Registered by ``tickrun/cli.py`` like every area's verbs. Progress goes to stderr every two
seconds; the summary is one JSON object on stdout (klines, partial updates, redeliveries,
records, seconds, klines/s, first/last open time).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tickrun.functions.errors import SpecError
from tickrun.functions.settings import KAFKA_BROKERS, broker_list

from .replay import INTERVALS, ReplayStats, Schedule, TopicSender, read_klines, replay


def register(sub: Any, get: Any) -> None:
    kafka = sub.add_parser("kafka", help="Kafka tools (replay market data into a topic)")
    actions = kafka.add_subparsers(dest="kafka_command", metavar="ACTION")
    actions.required = True
    rp = actions.add_parser(
        "replay",
        help="replay a Binance kline CSV/CSV.gz into a topic as websocket kline events",
        description="Produces Binance websocket kline JSON keyed by symbol, optionally with "
        "unclosed intra-bar updates before each closed bar, at a chosen pace.",
    )
    rp.add_argument("file", help="kline CSV or CSV.gz (open_time, open, high, low, close, …)")
    rp.add_argument("--topic", required=True)
    rp.add_argument(
        "--brokers",
        default=None,
        help=f"host:port[,host:port] (default ${KAFKA_BROKERS.name})",
    )
    pace = rp.add_mutually_exclusive_group(required=True)
    pace.add_argument("--speed", type=float, help="times real time, by the bars' event times")
    pace.add_argument("--rate", type=float, help="closed klines per second")
    pace.add_argument("--max", action="store_true", help="as fast as the producer goes")
    rp.add_argument(
        "--partial-updates",
        type=int,
        default=0,
        metavar="K",
        help="unclosed (x=false) updates sent before each closed kline",
    )
    rp.add_argument("--symbol", default="BTCUSDT", help="symbol when the file has no column")
    rp.add_argument("--interval", default="1m", choices=sorted(INTERVALS))
    rp.add_argument("--offset", type=int, default=0, help="skip this many bars first")
    rp.add_argument("--limit", type=int, default=None, help="replay at most N bars")
    rp.add_argument(
        "--redeliver-every",
        type=int,
        default=0,
        metavar="N",
        help="re-send the previous closed kline after every N-th (tests consumers' dedup)",
    )
    rp.set_defaults(func=_replay)


def _progress(stats: ReplayStats, total: int | None) -> None:
    of = f"/{total}" if total is not None else ""
    print(
        f"replay: {stats.klines}{of} klines, {stats.messages} records, "
        f"{stats.klines_per_s:,.0f} klines/s, {stats.seconds:.1f}s",
        file=sys.stderr,
        flush=True,
    )


def _replay(args: argparse.Namespace) -> int:
    try:
        brokers = broker_list(args.brokers) if args.brokers else KAFKA_BROKERS.get()
    except ValueError as exc:
        raise SpecError(f"--brokers: {exc}") from exc
    if not brokers:
        raise SpecError(f"give --brokers or set {KAFKA_BROKERS.name}")
    for name in ("partial_updates", "offset", "redeliver_every"):
        if getattr(args, name) < 0:
            raise SpecError(f"--{name.replace('_', '-')} must not be negative")
    if args.limit is not None and args.limit < 0:
        raise SpecError("--limit must not be negative")
    schedule = Schedule(speed=args.speed, rate=args.rate)
    klines = read_klines(
        args.file,
        symbol=args.symbol,
        interval=args.interval,
        offset=args.offset,
        limit=args.limit,
    )
    sender = TopicSender(brokers, args.topic)
    try:
        stats = replay(
            klines,
            sender,
            schedule=schedule,
            partial_updates=args.partial_updates,
            redeliver_every=args.redeliver_every,
            interval=args.interval,
            progress=lambda s: _progress(s, args.limit),
        )
    finally:
        sender.close()
    _progress(stats, args.limit)
    summary = {
        "topic": args.topic,
        "klines": stats.klines,
        "partial_updates": stats.partials,
        "redeliveries": stats.redeliveries,
        "records": stats.messages,
        "seconds": round(stats.seconds, 3),
        "klines_per_s": round(stats.klines_per_s, 1) if stats.seconds > 0 else None,
        "first_open_time": stats.first_open_time,
        "last_open_time": stats.last_open_time,
    }
    print(json.dumps(summary))
    return 0
