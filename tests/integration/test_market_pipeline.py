"""The Kafka market pipeline end to end on the real broker, deployed through a real controller
(process platform): ``tickrun kafka replay`` of real January 2024 BTCUSDT one-minute klines
with intra-bar updates and redeliveries → market_features 1.2 → model_server 1.1 →
paper_trader 1.0 → the report job as a tracked run. The signals equal the batch pipeline's
(features + the same model's predict_proba) bar by bar, and the run's PnL equals the paper
trading rules computed in batch. Bad records on every hop are dead-lettered, never stop the
stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tickrun
from tests.integration.test_controller_harness import ControllerProc, cleanup
from tests.peers import KafkaBroker
from tests.support import market_pipeline as mp
from tests.support.kafka_functions import produce, read_topic
from tickrun.hub.sampledata import MINUTE, market_data

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

TRAIN_BARS = 12_000  # the model learns on the first bars of the month …
OFFSET, BARS = 20_000, 2_200  # … and the stream replays bars it never saw
PARTIALS, REDELIVER_EVERY = 2, 250
# Stated tolerance: the stream's features equal batch within 1e-8 relative (market_features
# 1.2); through a scaled logistic model that moves a probability by far less than this.
PROBA_ATOL = 1e-7


def test_replayed_klines_give_the_batch_signals_and_pnl(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topics = mp.Topics.fresh()
    for topic in topics.all():
        kafka_broker.create_topic(topic, partitions=1)
    klines = mp.minute_klines(market_data(MINUTE))
    trained = mp.train_model(klines.iloc[:TRAIN_BARS])
    model = mp.load_trained(trained)
    window = klines.iloc[OFFSET : OFFSET + BARS].reset_index(drop=True)
    batch = mp.batch_signals(window, model, trained.features)
    assert len(batch) > 2_000 and batch["signal"].nunique() >= 2

    # A bad record at the head of each hop's topic: retried once, dead-lettered, stream goes on.
    produce(brokers, topics.klines, [b"not json at all", {"k": {"t": "x"}}])
    produce(brokers, topics.features, [{"symbol": "BTCUSDT", "features": {"nope": 1.0}}])
    produce(brokers, topics.signals, [{"symbol": "BTCUSDT", "signal": "buy?"}])

    ctl = ControllerProc(tmp_path / "state", dict(os.environ)).start()
    signals = mp.TopicReader(brokers, topics.signals)
    try:
        mp.deploy_pipeline(ctl.client, tmp_path / "fn", brokers, topics, trained, "t")
        replay = subprocess.run(
            [
                sys.executable,
                "-m",
                "tickrun",
                "kafka",
                "replay",
                str(market_data(MINUTE)),
                "--topic",
                topics.klines,
                "--brokers",
                brokers,
                "--max",
                "--partial-updates",
                str(PARTIALS),
                "--offset",
                str(OFFSET),
                "--limit",
                str(BARS),
                "--redeliver-every",
                str(REDELIVER_EVERY),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        summary = json.loads(replay.stdout)
        assert summary["klines"] == BARS
        assert summary["partial_updates"] == BARS * PARTIALS
        assert summary["redeliveries"] == BARS // REDELIVER_EVERY
        assert "replay:" in replay.stderr  # progress

        # The signals (one per new closed bar once the window is full, the bad one excepted).
        signals.wait(len(batch) + 1, timeout_s=180, what="signals")
        got = [v for v in signals.values() if "probability" in v]
        assert len(got) == len(batch), "a redelivered or partial kline became a signal"
        times = [g["open_time"] for g in got]
        assert len(set(times)) == len(times)
        assert times == batch["open_time"].tolist()
        np.testing.assert_allclose(
            [g["probability"] for g in got], batch["probability"], rtol=0, atol=PROBA_ATOL
        )
        assert [g["signal"] for g in got] == batch["signal"].tolist()
        assert [g["close"] for g in got] == batch["close"].tolist()
        assert {g["symbol"] for g in got} == {"BTCUSDT"}

        for topic, count in ((topics.klines, 2), (topics.features, 1), (topics.signals, 1)):
            dlq = read_topic(brokers, f"{topic}.dlq", expect=count, timeout_s=30)
            assert len(dlq) == count, topic

        # The trader's results, as a tracked run (no credentials in any replica).
        run = tickrun.import_function(mp.PAPER_TRADER).run(
            "report",
            params={"topic": topics.pnl, "brokers": brokers, "expect_marks": len(batch)},
        )
        assert run.state == "completed", run.error
        want = mp.batch_pnl(batch)
        res = run.results
        assert res["bars"] == len(batch)
        assert res["trades"] == want["trades"] == res["fills"] and want["trades"] > 10
        for key in ("gross_pnl", "fees", "net_pnl", "final_exposure"):
            assert res[key] == pytest.approx(want[key], rel=1e-9, abs=1e-6), key
        assert {"marks", "equity"} <= set(run.outputs)
        print(
            f"\n{BARS} klines (+{summary['partial_updates']} partial, "
            f"{summary['redeliveries']} redelivered) → {len(got)} signals, "
            f"{res['trades']} trades, net PnL {res['net_pnl']:.2f} (fees {res['fees']:.2f})"
        )
    finally:
        signals.close()
        cleanup(ctl)
