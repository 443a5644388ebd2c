"""The market_signals example, fed real BTCUSDT klines through Kafka: its signals equal an
independent pandas computation of the same moving-average crossover."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.peers import KafkaBroker
from tests.support.kafka_functions import produce, read_topic, serve
from tickrun.hub.sampledata import MINUTE, market_data

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "functions" / "examples" / "market_signals"
N = 600


def _klines() -> list[dict[str, str]]:
    with gzip.open(market_data(MINUTE), "rt", newline="") as fh:
        return list(csv.DictReader(fh))[:N]


def _expected(rows: list[dict[str, str]], fast: int, slow: int) -> list[tuple[str, str]]:
    close = pd.Series([float(r["close"]) for r in rows])
    times = pd.to_datetime([int(r["open_time"]) for r in rows], unit="ms", utc=True)
    above = close.rolling(fast).mean() > close.rolling(slow).mean()
    valid = close.rolling(slow).mean().notna()
    out = []
    prev = None
    for i in range(len(rows)):
        if not valid[i]:
            continue
        if prev is not None and above[i] != prev:
            out.append((times[i].isoformat(), "buy" if above[i] else "sell"))
        prev = above[i]
    return out


def test_signals_from_real_klines(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bs = kafka_broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    klines, signals, alerts = f"klines-{tag}", f"signals-{tag}", f"alerts-{tag}"
    for topic in (klines, signals, alerts):
        kafka_broker.create_topic(topic, partitions=1)
    fn_dir = tmp_path / "market_signals"
    shutil.copytree(EXAMPLE, fn_dir)
    spec = yaml.safe_load((fn_dir / "function.yaml").read_text())
    attrs = spec["spec"]["triggers"]["klines"]["attributes"]
    attrs.update(
        brokers=bs,
        topics=[klines],
        outputTopic=signals,
        deadLetterTopic=f"{klines}.dlq",
        consumerGroup=f"signals-{tag}",
    )
    for env in spec["spec"]["env"]:
        if env["name"] == "ALERT_TOPIC":
            env["value"] = alerts
        if env["name"] == "ALERT_MOVE":  # low enough that January 2024 triggers some
            env["value"] = "0.001"
    (fn_dir / "function.yaml").write_text(yaml.safe_dump(spec))

    rows = _klines()
    expected = _expected(rows, fast=5, slow=20)
    assert len(expected) > 10, "the sample should contain crossovers"
    produce(bs, klines, rows, key_of=lambda i: b"BTCUSDT")
    fn = serve(fn_dir)
    try:
        got = read_topic(bs, signals, expect=len(expected), timeout_s=60)
    finally:
        fn.terminate()
    decoded = [json.loads(r.value) for r in got]
    assert [(d["time"], d["signal"]) for d in decoded] == expected
    assert all(r.key == b"BTCUSDT" for r in got)
    moves = [abs(float(r["close"]) / float(r["open"]) - 1) for r in rows]
    big = sum(m >= 0.001 for m in moves)
    assert big > 0
    assert len(read_topic(bs, alerts, expect=big, timeout_s=30)) == big
    print(f"\n{len(rows)} klines → {len(decoded)} signals, {big} alerts")
