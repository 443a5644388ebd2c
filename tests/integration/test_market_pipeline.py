"""The Kafka market pipeline end to end on the real broker, deployed through a real controller
(process platform): ``tickrun kafka replay`` of real January 2024 BTCUSDT one-minute klines
with intra-bar updates and redeliveries → market_features 1.2 → model_server 1.1 →
paper_trader 1.1 → the report job as a tracked run. The signals equal the batch pipeline's
(features + the same model's predict_proba) bar by bar, and the run's PnL equals the paper
trading rules computed in batch. Bad records on every hop are dead-lettered, never stop the
stream; a trader replica killed mid-stream resumes its book and the PnL is still exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def trained() -> tuple[mp.Trained, Any]:
    klines = mp.minute_klines(market_data(MINUTE))
    model = mp.train_model(klines.iloc[:TRAIN_BARS])
    return model, mp.load_trained(model)


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProc]:
    proc = ControllerProc(tmp_path_factory.mktemp("ctl") / "state", dict(os.environ)).start()
    try:
        yield proc
    finally:
        cleanup(proc)


def _topics(broker: KafkaBroker) -> mp.Topics:
    topics = mp.Topics.fresh()
    for topic in topics.all():
        broker.create_topic(topic, partitions=1)
    return topics


def _replay(brokers: str, topic: str, offset: int, bars: int, *pace: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickrun",
            "kafka",
            "replay",
            str(market_data(MINUTE)),
            "--topic",
            topic,
            "--brokers",
            brokers,
            *pace,
            "--partial-updates",
            str(PARTIALS),
            "--offset",
            str(offset),
            "--limit",
            str(bars),
            "--redeliver-every",
            str(REDELIVER_EVERY),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "replay:" in out.stderr  # progress
    summary: dict[str, Any] = json.loads(out.stdout)
    assert summary["klines"] == bars
    assert summary["partial_updates"] == bars * PARTIALS
    assert summary["redeliveries"] == bars // REDELIVER_EVERY
    return summary


def _report(brokers: str, topics: mp.Topics, marks: int, batch: Any) -> dict[str, Any]:
    """The report job as a tracked run; its results checked against the batch rules."""
    run = tickrun.import_function(mp.PAPER_TRADER).run(
        "report", params={"topic": topics.pnl, "brokers": brokers, "expect_marks": marks}
    )
    assert run.state == "completed", run.error
    want = mp.batch_pnl(batch)
    res: dict[str, Any] = run.results
    assert res["bars"] == len(batch)
    assert res["trades"] == want["trades"] == res["fills"] and want["trades"] > 10
    for key in ("gross_pnl", "fees", "net_pnl", "final_exposure"):
        assert res[key] == pytest.approx(want[key], rel=1e-9, abs=1e-6), key
    assert {"marks", "equity"} <= set(run.outputs)
    return res


def test_replayed_klines_give_the_batch_signals_and_pnl(
    kafka_broker: KafkaBroker,
    trained: tuple[mp.Trained, Any],
    ctl: ControllerProc,
    tmp_path: Path,
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topics = _topics(kafka_broker)
    info, model = trained
    klines = mp.minute_klines(market_data(MINUTE))
    window = klines.iloc[OFFSET : OFFSET + BARS].reset_index(drop=True)
    batch = mp.batch_signals(window, model, info.features)
    assert len(batch) > 2_000 and batch["signal"].nunique() >= 2

    # A bad record at the head of each hop's topic: retried once, dead-lettered, stream goes on.
    produce(brokers, topics.klines, [b"not json at all", {"k": {"t": "x"}}])
    produce(brokers, topics.features, [{"symbol": "BTCUSDT", "features": {"nope": 1.0}}])
    produce(brokers, topics.signals, [{"symbol": "BTCUSDT", "signal": "buy?"}])

    signals = mp.TopicReader(brokers, topics.signals)
    try:
        mp.deploy_pipeline(ctl.client, tmp_path / "fn", brokers, topics, info, "t")
        summary = _replay(brokers, topics.klines, OFFSET, BARS, "--max")

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
        res = _report(brokers, topics, len(batch), batch)
        print(
            f"\n{BARS} klines (+{summary['partial_updates']} partial, "
            f"{summary['redeliveries']} redelivered) → {len(got)} signals, "
            f"{res['trades']} trades, net PnL {res['net_pnl']:.2f} (fees {res['fees']:.2f})"
        )
    finally:
        signals.close()
        for name in ("features-t", "model-t", "trader-t"):
            ctl.client.delete_function(name)


KILL_BARS = 1_200


def test_a_trader_killed_mid_stream_resumes_its_book(
    kafka_broker: KafkaBroker,
    trained: tuple[mp.Trained, Any],
    ctl: ControllerProc,
    tmp_path: Path,
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topics = _topics(kafka_broker)
    info, model = trained
    offset = OFFSET + BARS
    klines = mp.minute_klines(market_data(MINUTE))
    window = klines.iloc[offset : offset + KILL_BARS].reset_index(drop=True)
    batch = mp.batch_signals(window, model, info.features)
    pnl = mp.TopicReader(brokers, topics.pnl)
    try:
        mp.deploy_pipeline(ctl.client, tmp_path / "fn", brokers, topics, info, "k")
        # Paced (about 8 s), so the kill lands mid-stream.
        replay = subprocess.Popen(
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
                "--rate",
                "150",
                "--partial-updates",
                str(PARTIALS),
                "--offset",
                str(offset),
                "--limit",
                str(KILL_BARS),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pnl.wait(300, timeout_s=60, what="marks before the kill")
        before = ctl.client.get_function("trader-k")["replicas"]["items"][0]
        marks_at_kill = sum(1 for v in pnl.values() if v.get("type") == "mark")
        os.kill(before["pid"], signal.SIGKILL)
        assert replay.wait(timeout=120) == 0
        mp.wait_until(
            lambda: ctl.client.get_function("trader-k")["replicas"]["items"][0]["restarts"] >= 1,
            60,
            "the trader's restart",
        )
        assert marks_at_kill < len(batch) // 2, "the kill came late in the stream"
        after = ctl.client.get_function("trader-k")["replicas"]["items"][0]
        assert after["pid"] != before["pid"]
        # A replica that restarted flat would have lost the position, PnL and trade count.
        _report(brokers, topics, len(batch), batch)
    finally:
        pnl.close()
        for name in ("features-k", "model-k", "trader-k"):
            ctl.client.delete_function(name)
