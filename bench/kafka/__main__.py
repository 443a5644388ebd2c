"""Kafka trigger throughput: tickrun vs a raw kafka-python consumer loop, same broker, same
topic, same run.

N real 1-minute BTCUSDT klines (``hub/data/btcusdt_1m_2024-01.csv.gz``, bundled) as JSON are
produced once to a P-partition topic of a real broker (started here from tests/peers/kafka.py
unless ``--bootstrap`` is given). Each round then consumes the whole topic with a fresh
consumer group:

- ``raw``: one KafkaConsumer, ``poll()`` loop, JSON-decode and call the handler per record,
  commit after handling once a second (same at-least-once contract, same fetch settings as the
  trigger; the trigger keeps its default of a commit per 1,000 events or per second, which
  costs it a little);
- ``tickrun``: a real ``tickrun serve`` replica (1 worker process; 2 in the ``x2 proc`` rounds,
  each a consumer-group member) with the Kafka trigger and the same handler; the clock runs
  to the N-th processed event, read from its ``/metrics`` every 250 ms (interpolated at the
  end).

Rounds alternate raw / tickrun; the best round of each is reported (the box is shared), and
the median of each round's ratio to the raw round just before it. The ``x2 proc`` rounds
include the rebalance when the second worker process joins the group: events handled again
across it count twice, so their best round overstates; read their median. Both
sides start their clock after the first 10% of the events (start-up, group join).

    python -m bench.kafka [--messages 200000] [--partitions 4] [--rounds 2] [--plot PATH]
        [--client kafka-python confluent-kafka]

``--client confluent-kafka`` adds, each round, a raw confluent-kafka loop (``raw confluent``,
:mod:`bench.kafka.confluent_raw`) and the trigger with ``attributes.client: confluent-kafka``
at each ``--num-workers`` (``tickrun[confluent] …`` rows), each against both raw loops; the
kafka-python rows and the goal lines stay as they are.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from tests.support.processes import ServedFunction
from tickrun.hub.sampledata import MINUTE, market_data

from .confluent_raw import raw_confluent_loop
from .handlers import dataframe_work, function_code, noop

REPO = Path(__file__).resolve().parents[2]
FETCH_MAX_WAIT_MS = 50  # the trigger's default maxWaitTime; the raw loop gets the same
MAX_POLL_RECORDS = 500
COMMIT_INTERVAL_S = 1.0
# Both sides start the clock once this share of the events is done: start-up and the consumer
# group's join (a rebalance when a second worker process joins) are not throughput.
WARMUP = 0.1
GOAL = 0.9  # issue 17: the numWorkers=4 pool vs the raw loop, best and median

WORK: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "noop": ("noop(event.body)", noop),
    "async-noop": ("noop(event.body)", noop),
    "dataframe": ("dataframe_work(event.body)", dataframe_work),
}


@dataclass
class Result:
    label: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def load_klines(n: int) -> list[bytes]:
    with gzip.open(market_data(MINUTE), "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = [json.dumps({"symbol": "BTCUSDT", **r}).encode() for r in rows]
    while len(out) < n:  # more than a month requested: replay the month
        out.extend(out[: n - len(out)])
    return out[:n]


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> float:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    time.sleep(1.0)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    t0 = time.perf_counter()
    for i, value in enumerate(values):
        producer.send(topic, value, key=b"BTCUSDT", partition=i % partitions)
    producer.flush()
    producer.close()
    return time.perf_counter() - t0


def raw_loop(bootstrap: str, topic: str, n: int, fn: Callable[[Any], Any]) -> Result:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_poll_records=MAX_POLL_RECORDS,
    )
    seen = 0
    warm = max(int(n * WARMUP), 1)  # the clock starts after this many records
    t0: float | None = None
    last_commit = time.monotonic()
    done: dict[Any, int] = {}
    try:
        while seen < n:
            batch = consumer.poll(timeout_ms=100)
            for tp, records in batch.items():
                for record in records:
                    fn(json.loads(record.value))
                    done[tp] = record.offset + 1
                    seen += 1
                    if seen == warm:
                        t0 = time.perf_counter()
            if done and (time.monotonic() - last_commit >= COMMIT_INTERVAL_S or seen >= n):
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in done.items()})
                last_commit = time.monotonic()
        assert t0 is not None
        return Result("raw", seen - warm, time.perf_counter() - t0)
    finally:
        consumer.close()


def raw_confluent(bootstrap: str, topic: str, n: int, fn: Callable[[Any], Any]) -> Result:
    events, seconds = raw_confluent_loop(
        bootstrap,
        topic,
        n,
        fn,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        batch=MAX_POLL_RECORDS,
        commit_interval_s=COMMIT_INTERVAL_S,
        warmup=WARMUP,
    )
    return Result("raw confluent", events, seconds)


def write_function(
    root: Path,
    bootstrap: str,
    topic: str,
    work: str,
    num_workers: int,
    attributes: dict[str, Any] | None = None,
) -> Path:
    fn_dir = root / f"fn-{work}-{num_workers}-{uuid.uuid4().hex[:6]}"
    fn_dir.mkdir(parents=True)
    (fn_dir / "main.py").write_text(function_code(WORK[work][0], is_async=work == "async-noop"))
    spec = {
        "metadata": {"name": "bench-kafka"},
        "spec": {
            "handler": "main:handler",
            "triggers": {
                "ticks": {
                    "kind": "kafka-cluster",
                    "numWorkers": num_workers,
                    "attributes": {
                        "brokers": bootstrap,
                        "topics": [topic],
                        "consumerGroup": f"tickrun-{uuid.uuid4().hex[:8]}",
                        "initialOffset": "earliest",
                        "maxPollRecords": MAX_POLL_RECORDS,
                        "maxWaitTime": f"{FETCH_MAX_WAIT_MS}ms",
                        "commitInterval": f"{COMMIT_INTERVAL_S}s",
                        **(attributes or {}),
                    },
                }
            },
        },
    }
    (fn_dir / "function.yaml").write_text(yaml.safe_dump(spec))
    return fn_dir


_PROCESSED = re.compile(r"^tickrun_kafka_processed_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def _processed(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return int(sum(float(v) for v in _PROCESSED.findall(text)))


# A /metrics scrape costs the replica ~2 ms of CPU (its GIL is the consumer's): sample sparingly;
# the end is interpolated, the start is a sample, so sparse samples do not round the time.
SCRAPE_INTERVAL_S = 0.25


def tickrun_replica(
    fn_dir: Path, n: int, label: str, timeout_s: float = 600, processes: int = 1
) -> Result:
    """Events/s from the replica's own counter, sampled every SCRAPE_INTERVAL_S.

    The clock starts at the first sample that saw WARMUP of the events processed (counting
    only those after it) and stops where the count crossed ``n``, interpolated between the two
    samples around it, so sparse sampling neither steals the replica's CPU nor rounds the time
    up.
    """
    fn = ServedFunction(fn_dir, "--workers", str(processes)).start()
    try:
        deadline = time.monotonic() + timeout_s
        t0: float | None = None
        first = 0
        prev_t, prev_count = 0.0, 0
        while True:
            count = _processed(fn.url)
            now = time.perf_counter()
            if t0 is None and count >= n * WARMUP:
                t0, first = now, count
            if count >= n:
                assert t0 is not None
                if now == t0 or count == prev_count:
                    end = now
                else:  # where between the last two samples the n-th event landed
                    end = prev_t + (now - prev_t) * (n - prev_count) / (count - prev_count)
                return Result(label, n - first, max(end - t0, 1e-6))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: only {count}/{n} events in {timeout_s:.0f}s")
            prev_t, prev_count = now, count
            time.sleep(SCRAPE_INTERVAL_S)
    finally:
        fn.terminate()


def plot(results: dict[str, Result], path: Path, title: str) -> None:
    """Two panels, each with its own scale: the no-op rounds and the DataFrame-row rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("no-op handler", [k for k in results if "dataframe" not in k]),
        ("handler builds a DataFrame row per kline", [k for k in results if "dataframe" in k]),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for ax, (name, labels) in zip(axes, groups, strict=True):
        rates = [results[k].rate for k in labels]
        base = rates[0] if labels and labels[0].startswith("raw") else None
        colors = ["#888888" if k.startswith("raw") else "#1f77b4" for k in labels]
        bars = ax.barh(labels, rates, color=colors)
        texts = [
            f"{r:,.0f}/s" + ("" if base is None or k.startswith("raw") else f" ({r / base:.2f}x)")
            for k, r in zip(labels, rates, strict=True)
        ]
        ax.bar_label(bars, labels=texts, padding=3)
        ax.set_title(name)
        ax.set_xlabel("events per second (higher is better)")
        ax.invert_yaxis()
        ax.set_xlim(0, max(rates, default=1) * 1.45)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kafka", description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000, help="klines to consume per round")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--num-workers",
        type=int,
        nargs="+",
        default=[1, 4],
        help="trigger numWorkers values to measure with the no-op handler",
    )
    ap.add_argument(
        "--work-messages",
        type=int,
        default=10_000,
        help="klines for the DataFrame-row handler rounds",
    )
    ap.add_argument(
        "--processes",
        type=int,
        default=2,
        help="also measure the no-op with a replica of this many worker processes (0: skip)",
    )
    ap.add_argument("--skip-async", action="store_true", help="leave out the async no-op rounds")
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument(
        "--client",
        nargs="+",
        choices=["kafka-python", "confluent-kafka"],
        default=["kafka-python", "confluent-kafka"],
        help="confluent-kafka adds a raw confluent loop and the trigger on it, per round "
        "(both by default: `make bench` shows the option beside kafka-python)",
    )
    ap.add_argument(
        "--plot",
        default=str(Path(tempfile.gettempdir()) / "bench-kafka.png"),
        help="PNG to write, its numbers beside it as JSON ('' for neither)",
    )
    args = ap.parse_args(argv)

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from tests.peers.kafka import KafkaBroker

        print("starting a Kafka broker (tests/peers/kafka.py) …", flush=True)
        broker = KafkaBroker().start()
        bootstrap = broker.bootstrap_servers
    root = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    try:
        n, p = args.messages, args.partitions
        values = load_klines(max(n, args.work_messages))
        topic = f"bench-klines-{uuid.uuid4().hex[:6]}"
        secs = produce(bootstrap, topic, values[:n], p)
        work_topic = f"bench-work-{uuid.uuid4().hex[:6]}"
        if args.work_messages > 0:
            produce(bootstrap, work_topic, values[: args.work_messages], p)
        print(
            f"produced {n:,} klines ({sum(map(len, values[:n])) / n:.0f} B each) to "
            f"{topic} ({p} partitions) in {secs:.1f}s; broker {bootstrap}",
            flush=True,
        )

        best: dict[str, Result] = {}
        # Each tickrun round against the raw round just before it: the host's speed drifts
        # between rounds (a shared VM), less so within one.
        ratios: dict[str, list[float]] = {}
        this_round: dict[str, float] = {}

        def keep(r: Result) -> None:
            base = "raw dataframe" if "dataframe" in r.label else "raw"
            if "confluent" in r.label:
                confluent_rows(r)
                return
            if r.label.startswith("raw"):
                this_round[base] = r.rate
                ratio = ""
            else:
                ratios.setdefault(r.label, []).append(r.rate / this_round[base])
                ratio = f" ({r.rate / this_round[base]:.2f}x this round's raw)"
            print(
                f"  {r.label:<32} {r.events:>7,} events in {r.seconds:6.2f}s = "
                f"{r.rate:>9,.0f} events/s{ratio}",
                flush=True,
            )
            if r.label not in best or r.rate > best[r.label].rate:
                best[r.label] = r

        def confluent_rows(r: Result) -> None:
            # Against both raw loops of this round: librdkafka's own and kafka-python's.
            if r.label.startswith("raw"):
                this_round[r.label] = r.rate
                ratio = f" ({r.rate / this_round['raw']:.2f}x this round's raw kafka-python)"
            else:
                vs_c, vs_k = r.rate / this_round["raw confluent"], r.rate / this_round["raw"]
                ratios.setdefault(r.label, []).append(vs_c)
                ratios.setdefault(r.label + " vs kafka-python", []).append(vs_k)
                ratio = f" ({vs_c:.2f}x raw confluent, {vs_k:.2f}x raw kafka-python)"
            print(
                f"  {r.label:<32} {r.events:>7,} events in {r.seconds:6.2f}s = "
                f"{r.rate:>9,.0f} events/s{ratio}",
                flush=True,
            )
            if r.label not in confluent_best or r.rate > confluent_best[r.label].rate:
                confluent_best[r.label] = r

        confluent_best: dict[str, Result] = {}
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd}/{args.rounds}: no-op handler, {n:,} events", flush=True)
            keep(raw_loop(bootstrap, topic, n, noop))
            if "confluent-kafka" in args.client:
                keep(raw_confluent(bootstrap, topic, n, noop))
                for w in args.num_workers:
                    attrs = {"client": "confluent-kafka"}
                    fn_dir = write_function(root, bootstrap, topic, "noop", w, attrs)
                    keep(tickrun_replica(fn_dir, n, f"tickrun[confluent] noop numWorkers={w}"))
            for w in args.num_workers:
                fn_dir = write_function(root, bootstrap, topic, "noop", w)
                keep(tickrun_replica(fn_dir, n, f"tickrun noop numWorkers={w}"))
                if w > 1:
                    # For comparison: every event through the handler threads. By default
                    # (the row above) a measured-fast handler runs on the consumer thread
                    # while the pool is idle (triggers/kafka/inline.py).
                    attrs = {"inlineFastHandler": False}
                    fn_dir = write_function(root, bootstrap, topic, "noop", w, attrs)
                    label = f"tickrun noop numWorkers={w} pool only"
                    keep(tickrun_replica(fn_dir, n, label))
            # The same no-op as `async def`: no thread-pool hop per event, which isolates the
            # trigger's own cost from the processor's sync-handler executor.
            if not args.skip_async:
                wk = max(args.num_workers)
                fn_dir = write_function(root, bootstrap, topic, "async-noop", wk)
                keep(tickrun_replica(fn_dir, n, f"tickrun async noop numWorkers={wk}"))
            if args.processes > 1:
                # Each worker process is a consumer-group member: partitions spread over cores.
                # numWorkers=1, the recommended set-up (the handler runs on the consumer thread).
                fn_dir = write_function(root, bootstrap, topic, "noop", 1)
                label = f"tickrun noop numWorkers=1 x{args.processes} proc"
                keep(tickrun_replica(fn_dir, n, label, processes=args.processes))
            m, wk = args.work_messages, max(args.num_workers)
            if m <= 0:
                continue
            print(f"round {rnd}/{args.rounds}: DataFrame-row handler, {m:,} events", flush=True)
            r = raw_loop(bootstrap, work_topic, m, dataframe_work)
            keep(Result("raw dataframe", r.events, r.seconds))
            for w in sorted({1, wk}):
                fn_dir = write_function(root, bootstrap, work_topic, "dataframe", w)
                keep(tickrun_replica(fn_dir, m, f"tickrun dataframe numWorkers={w}"))
            if args.processes > 1:
                # The recommended set-up for CPU-bound Python handlers: one handler thread per
                # process (threads would only share one GIL), one process per core.
                fn_dir = write_function(root, bootstrap, work_topic, "dataframe", 1)
                label = f"tickrun dataframe numWorkers=1 x{args.processes} proc"
                keep(tickrun_replica(fn_dir, m, label, processes=args.processes))

        print("\nbest of each (events/s), and the median of the per-round ratios:")
        raw = best["raw"].rate
        raw_work = best["raw dataframe"].rate if "raw dataframe" in best else 0.0
        for label, r in best.items():
            base = raw_work if "dataframe" in label else raw
            ratio = ""
            if not label.startswith("raw"):
                per_round = statistics.median(ratios[label])
                ratio = f"  {r.rate / base:5.2f}x raw (median per round {per_round:.2f}x)"
            print(f"  {label:<40} {r.rate:>9,.0f}{ratio}")
        print(
            f"\ngoal (issue 17): the no-op pool (numWorkers>1) >= {GOAL:.2f}x raw, best and median"
        )
        for label, r in best.items():
            if label.startswith("raw") or "noop" not in label or "numWorkers=1" in label:
                continue
            if "async" in label or "proc" in label:
                continue
            by_best, by_median = r.rate / raw, statistics.median(ratios[label])
            met = "met" if min(by_best, by_median) >= GOAL else "NOT met"
            print(
                f"  {label:<40} {r.rate:>9,.0f} vs raw {raw:>9,.0f}: best {by_best:.2f}x, "
                f"median {by_median:.2f}x -> goal {met}"
            )
        if confluent_best:
            print("\nconfluent-kafka (best events/s; median per-round ratio to each raw loop):")
            raw_c = confluent_best["raw confluent"].rate
            for label, r in confluent_best.items():
                ratio = f"  {r.rate / raw:5.2f}x best raw kafka-python"
                if not label.startswith("raw"):
                    ratio = (
                        f"  {r.rate / raw_c:5.2f}x raw confluent (median "
                        f"{statistics.median(ratios[label]):.2f}x), {r.rate / raw:5.2f}x raw "
                        f"kafka-python (median "
                        f"{statistics.median(ratios[label + ' vs kafka-python']):.2f}x)"
                    )
                print(f"  {label:<40} {r.rate:>9,.0f}{ratio}")
        if not args.plot:
            return 0
        plot(
            {**best, **confluent_best},
            Path(args.plot),
            f"Kafka → handler, {p} partitions, 1 worker process unless 'xN proc' "
            "(raw kafka-python loop in grey; same broker, same run)",
        )
        json_path = Path(args.plot).with_suffix(".json")
        json_path.write_text(
            json.dumps(
                {
                    k: {
                        "events": r.events,
                        "seconds": r.seconds,
                        "events_per_s": r.rate,
                        "ratios_per_round": ratios.get(k, []),
                    }
                    for k, r in best.items()
                },
                indent=2,
            )
        )
        print(f"\nplot: {args.plot}\nnumbers: {json_path}")
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
