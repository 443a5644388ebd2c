"""The Kafka market pipeline, deployed: kline → signal latency and sustained klines/s, beside
the batch pipeline's cost per bar measured in the same run.

A real broker (tests/peers/kafka.py, unless ``--bootstrap``) and a real controller (process
platform) run hub://market_features:1.2 → hub://model_server:1.1 → hub://paper_trader:1 on
Kafka triggers, as tests/integration/test_market_pipeline.py deploys them
(tests/support/market_pipeline.py). Real January 2024 BTCUSDT minute klines, each closed bar
preceded by ``--partials`` intra-bar updates:

- **throughput**: ``--throughput-bars`` klines queued on the topic before the pipeline is
  deployed (so the producer cannot be the limit); klines/s from the first signal read to the
  last (start-up excluded).
- **latency**: the next ``--latency-bars`` klines replayed at ``--rate`` closed klines/s; for
  each signal, the wall time it was read from the signals topic minus the wall time the replay
  handed its closed kline to the producer (the same clock: both in this process). Three hops,
  each a consume → handler → produce, plus the reader's own consume. p50/p99/max.
- **batch baseline**: the same bars through the batch pipeline (bars_from_klines +
  compute_features + the same model's predict_proba + the paper-trading rules vectorized),
  best of 3; its cost per bar beside the stream's (1 / klines/s), and the ratio.

    python -m bench.pipeline [--latency-bars 1500] [--rate 50] [--throughput-bars 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(q / 100 * (len(values) - 1))))
    return values[k]


def _replay(bootstrap: str, topic: str, klines: Any, rate: float | None, partials: int) -> Any:
    from tickrun.triggers.kafka.replay import Schedule, TopicSender, replay

    # Paced: every record leaves at once (latency); flat out: batches of 5 ms (throughput).
    sender = TopicSender(bootstrap.split(","), topic, linger_ms=0 if rate else 5)
    try:
        return replay(
            klines,
            sender,
            schedule=Schedule(rate=rate),
            partial_updates=partials,
            record_sent=True,
        )
    finally:
        sender.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    ap.add_argument("--latency-bars", type=int, default=1_500)
    ap.add_argument("--rate", type=float, default=50.0, help="closed klines/s while timing")
    ap.add_argument("--throughput-bars", type=int, default=10_000)
    ap.add_argument("--partials", type=int, default=2, help="intra-bar updates per kline")
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = ap.parse_args(argv)

    # Runs, artifacts and the controller's state in a scratch home, never ~/.tickrun.
    home = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    os.environ["TICKRUN_HOME"] = str(home)
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        os.environ.pop(var, None)
    from tests.integration.test_controller_harness import ControllerProc, cleanup
    from tests.support import market_pipeline as mp
    from tickrun.hub.sampledata import MINUTE, market_data
    from tickrun.triggers.kafka.replay import read_klines

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from tests.peers.kafka import KafkaBroker

        print("starting a Kafka broker (tests/peers/kafka.py) …", flush=True)
        broker = KafkaBroker().start()
        bootstrap = broker.bootstrap_servers
    ctl = None
    reader = None
    try:
        topics = mp.Topics.fresh("bench")
        if broker is not None:
            for t in topics.all():
                broker.create_topic(t, partitions=1)
        klines = mp.minute_klines(market_data(MINUTE))
        t0 = time.perf_counter()
        trained = mp.train_model(klines.iloc[:12_000])
        model = mp.load_trained(trained)
        print(f"trained the model (tracked run) in {time.perf_counter() - t0:.1f}s", flush=True)
        start = 14_000
        lat_n, thr_n = args.latency_bars, args.throughput_bars
        lookback = mp.features_module().lookback(mp.WINDOWS)
        # Throughput: a backlog of klines already on the topic when the pipeline starts, so
        # the producer (kafka-python, ~9k records/s here) cannot be what limits it.
        print(f"throughput: {thr_n:,} klines ({args.partials} partials each) queued …")
        thr = _replay(
            bootstrap,
            topics.klines,
            read_klines(market_data(MINUTE), offset=start, limit=thr_n),
            None,
            args.partials,
        )
        reader = mp.TopicReader(bootstrap, topics.signals)
        ctl = ControllerProc(home / "controller", dict(os.environ)).start()
        t0 = time.perf_counter()
        mp.deploy_pipeline(ctl.client, home / "fn", bootstrap, topics, trained, "bench")
        print(f"deployed 3 functions in {time.perf_counter() - t0:.1f}s", flush=True)
        n_thr = thr_n - lookback + 1
        reader.wait(n_thr, timeout_s=600, what="signals")
        arrived = sorted(t for t, _v, _h in reader.records[:n_thr])
        # From the first signal to the last: every function busy, start-up excluded.
        stream_rate = (n_thr - 1) / (arrived[-1] - arrived[0])

        print(f"latency: {lat_n:,} klines at {args.rate:g}/s, {args.partials} partials …")
        lat = _replay(
            bootstrap,
            topics.klines,
            read_klines(market_data(MINUTE), offset=start + thr_n, limit=lat_n),
            args.rate,
            args.partials,
        )
        reader.wait(n_thr + lat_n, timeout_s=120, what="signals")
        arrivals = {
            ("BTCUSDT", int(v["open_time"])): t
            for (t, _raw, _h), v in zip(list(reader.records), reader.values(), strict=True)
        }
        latencies = [(arrivals[key] - sent) * 1000 for key, sent in lat.sent_at.items()]

        window = klines.iloc[start : start + thr_n].reset_index(drop=True)
        batch_s = []
        for _ in range(3):
            t0 = time.perf_counter()
            mp.batch_pnl(mp.batch_signals(window, model, trained.features))
            batch_s.append(time.perf_counter() - t0)
        batch_per_bar = min(batch_s) / thr_n
        stream_per_bar = 1 / stream_rate
        print()
        print(f"kline → signal latency ({len(latencies):,} signals at {args.rate:g} klines/s):")
        print(
            f"  p50 {statistics.median(latencies):.1f} ms   p99 {_pct(latencies, 99):.1f} ms   "
            f"max {max(latencies):.1f} ms"
        )
        print(
            f"pipeline sustained: {stream_rate:,.0f} klines/s through 3 functions "
            f"({stream_per_bar * 1e6:,.0f} µs per bar, {args.partials} partial updates each; "
            f"the replay queued them at {thr.klines_per_s:,.0f} klines/s)"
        )
        print(
            f"batch pipeline (baseline): {1 / batch_per_bar:,.0f} bars/s "
            f"({batch_per_bar * 1e6:,.1f} µs per bar, best of 3 over the same {thr_n:,} bars)"
        )
        print(f"ratio stream / batch cost per bar: {stream_per_bar / batch_per_bar:,.0f}x")
        return 0
    finally:
        if reader is not None:
            reader.close()
        if ctl is not None:
            cleanup(ctl)
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
