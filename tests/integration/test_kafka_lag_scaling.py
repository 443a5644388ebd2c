"""Autoscaling on Kafka consumer-group lag, and wake from zero on lag and on cron, with a real
controller, real process-platform replicas and a real Kafka broker.

Replicas run sandboxed (a private /tmp), so the functions report what they did through Kafka:
the lag function's progress is its group's committed offsets, the cron function produces one
record per firing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from tests.integration.test_controller_harness import ControllerProc, cleanup, wait_for
from tests.peers import KafkaBroker
from tests.support.kafka_functions import produce
from tests.support.lag_functions import (
    LAG_HANDLER,
    group_lag,
    lag_spec,
    members,
    spec_of,
    write_function,
)
from tickrun.controller.lag import LagMonitor
from tickrun.functions.spec import FunctionSpec, parse_spec

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
SLEEP_S = 0.02  # per record: one consumer drains ~50 records/s

CRON_HANDLER = """
import json, os, time
from kafka import KafkaProducer

_producer = None


def init_context(context):
    global _producer
    _producer = KafkaProducer(bootstrap_servers=os.environ["BROKERS"], acks="all")


def handler(context, event):
    firing = {"ran_at": time.time(), "replica": os.environ.get("TICKRUN_REPLICA_ID")}
    _producer.send(os.environ["FIRED_TOPIC"], json.dumps(firing).encode())
    _producer.flush(10)
"""


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProc]:
    env = dict(os.environ)
    env["TICKRUN_LAG_INTERVAL_S"] = "0.5"
    env["TICKRUN_CRON_WAKE_LEAD_S"] = "6"
    proc = ControllerProc(tmp_path_factory.mktemp("lagctl") / "state", env).start()
    try:
        yield proc
    finally:
        cleanup(proc)


def _replicas(ctl: ControllerProc, name: str, state: str | None = None) -> int:
    items = ctl.client.get_function(name)["replicas"]["items"]
    return sum(1 for r in items if state is None or r["state"] == state)


def test_a_burst_scales_up_drains_and_scales_back_then_lag_wakes_from_zero(
    ctl: ControllerProc, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topic, group, name = "lag-burst", "lag-burst-g", "lagfn"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    spec = lag_spec(
        brokers,
        topic,
        group,
        sleep_s=SLEEP_S,
        minReplicas=1,
        maxReplicas=8,  # more than the partitions: the cap is the topic's 4
        targetLag=40,
        lagWindow="4s",
        scaleToZeroIdleTime="3s",
    )
    folder = write_function(tmp_path, name, LAG_HANDLER, spec)
    ctl.client.deploy(spec_of(folder), folder)
    ctl.client.wait_ready(name, timeout_s=120)
    assert _replicas(ctl, name) == 1

    burst = 800  # one consumer alone: ~16 s
    t0 = time.monotonic()
    produce(brokers, topic, ({"i": i} for i in range(burst)), partition_of=lambda i: i % 4)
    t_produced = time.monotonic() - t0
    wait_for(lambda: ctl.client.get_function(name)["replicas"]["desired"] == 4, 20, "desired 4")
    t_desired = time.monotonic() - t0
    scale = ctl.client.get_function(name)["scale"]
    assert scale["partitions"] == PARTITIONS
    assert "capped at 4 partitions" in scale["reason"], scale  # 800/40 = 20 wanted
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    try:
        # The new replicas' consumers join the group and share the partitions.
        wait_for(lambda: members(admin, group) == 4, 60, "4 consumers in the group")
        t_joined = time.monotonic() - t0
        wait_for(lambda: group_lag(brokers, group, topic, PARTITIONS) == 0, 60, "the burst drained")
        t_drained = time.monotonic() - t0
        # The controller saw the same: its own reading reaches 0, then the count falls back.
        wait_for(lambda: ctl.client.get_function(name)["scale"]["lag"] == 0, 10, "lag 0 seen")
        wait_for(lambda: _replicas(ctl, name) == 1, 30, "back to minReplicas 1")
        t_down = time.monotonic() - t0
        assert ctl.client.get_function(name)["scale"]["reason"] == "minReplicas 1"
        wait_for(lambda: members(admin, group) == 1, 30, "1 consumer left in the group")
    finally:
        admin.close()
    print(
        f"\nlag burst of {burst}: produced {t_produced:.1f} s, desired 4 at {t_desired:.1f} s, "
        f"4 consumers at {t_joined:.1f} s, drained at {t_drained:.1f} s, "
        f"back to 1 at {t_down:.1f} s (one replica alone: ~{burst * SLEEP_S:.0f} s of work)"
    )
    assert t_drained < burst * SLEEP_S  # the extra consumers did drain it faster

    # minReplicas 0: idle (no lag, no requests) for 3 s → zero; new lag brings it back.
    spec_zero = spec_of(folder)
    spec_zero["spec"]["minReplicas"] = 0
    ctl.client.deploy(spec_zero, None)
    wait_for(lambda: _replicas(ctl, name) == 0, 30, "scaled to zero")
    assert "scaled to zero" in ctl.client.get_function(name)["scale"]["reason"]
    time.sleep(2)
    assert _replicas(ctl, name) == 0  # stays at zero while there is nothing to do
    t1 = time.monotonic()
    produce(brokers, topic, ({"i": i} for i in range(20)), partition_of=lambda i: i % 4)
    wait_for(lambda: _replicas(ctl, name, "ready") >= 1, 30, "woken by lag")
    t_woken = time.monotonic() - t1
    wait_for(
        lambda: group_lag(brokers, group, topic, PARTITIONS) == 0, 30, "the new records consumed"
    )
    print(f"woken from zero by lag in {t_woken:.1f} s")
    wait_for(lambda: _replicas(ctl, name) == 0, 30, "back to zero once drained and idle")


def test_a_cron_firing_wakes_a_function_at_zero(
    ctl: ControllerProc, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    brokers = kafka_broker.bootstrap_servers
    fired_topic, name = "cron-fired", "cronfn"
    kafka_broker.create_topic(fired_topic, partitions=1)
    spec = {
        "minReplicas": 0,
        "maxReplicas": 1,
        "scaleToZeroIdleTime": "2s",
        "env": [
            {"name": "BROKERS", "value": brokers},
            {"name": "FIRED_TOPIC", "value": fired_topic},
        ],
        # Seconds first (Nuclio's robfig/cron): every 20 s, at :00, :20, :40.
        "triggers": {"tick": {"kind": "cron", "attributes": {"schedule": "*/20 * * * * *"}}},
    }
    folder = write_function(tmp_path, name, CRON_HANDLER, spec)
    ctl.client.deploy(spec_of(folder), folder)
    items = ctl.client.wait_ready(name, timeout_s=120)["replicas"]["items"]
    # On a loaded machine the 2 s idle window can pass before wait_ready sees the replica: it
    # is then gone already, and any replica that fires later is a new one.
    first = items[0]["id"] if items else None
    # Between firings it goes to zero (2 s idle), and is woken 6 s before the next one.
    wait_for(lambda: _replicas(ctl, name) == 0, 40, "scaled to zero between firings")
    at_zero = time.time()
    consumer = KafkaConsumer(
        fired_topic,
        bootstrap_servers=brokers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    firings: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(f["ran_at"] > at_zero for f in firings):
            firings += [json.loads(r.value) for r in consumer]
    finally:
        consumer.close()
    after = [f for f in firings if f["ran_at"] > at_zero]
    assert after, f"no firing after the function went to zero at {at_zero}: {firings}"
    # It ran on the second boundary it was scheduled for (the replica was up in time).
    assert after[0]["ran_at"] % 20 < 2, after[0]
    assert after[0]["replica"] != first  # a replica started for it, after the zero
    wait_for(lambda: _replicas(ctl, name) == 0, 30, "back to zero after the firing")


def test_the_monitor_reads_lag_and_partitions_and_reports_dead_brokers_as_unknown(
    kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    brokers = kafka_broker.bootstrap_servers
    kafka_broker.create_topic("lag-read", partitions=3)

    def spec(addr: str, offset: str = "earliest") -> FunctionSpec:
        attrs = {"brokers": addr, "topics": ["lag-read"], "consumerGroup": f"g-{offset}"}
        attrs["initialOffset"] = offset
        trigger = {"kind": "kafka-cluster", "attributes": attrs}
        return parse_spec({"metadata": {"name": "m"}, "spec": {"triggers": {"k": trigger}}})

    produce(brokers, "lag-read", ({"i": i} for i in range(30)), partition_of=lambda i: i % 3)
    monitor = LagMonitor(interval_s=0.2)
    # A group that never committed starts where a new consumer would: the log start or its end.
    monitor.watch([("early", spec(brokers)), ("late", spec(brokers, "latest"))])

    def sampled() -> bool:
        monitor.sample_once()  # on this thread; the first may find no group coordinator yet
        return _read(monitor, "early") is not None and _read(monitor, "late") is not None

    wait_for(sampled, 20, "a first reading")
    assert (_read(monitor, "early"), _read(monitor, "late")) == ((30, 3), (0, 3))

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    monitor.watch([("early", spec(brokers)), ("dead", spec(dead))])
    monitor.start()
    try:
        wait_for(lambda: monitor.reading("dead") is not None, 20, "a reading of the dead one")
        time.sleep(2)  # a few more passes: still one warning
    finally:
        monitor.stop()
    dead_reading = monitor.reading("dead")
    assert dead_reading is not None and dead_reading.lag is None  # unknown, not 0
    assert _read(monitor, "early") == (30, 3)  # the live function is still read
    warnings = [
        r
        for r in caplog.records
        if "cannot read Kafka consumer lag" in r.getMessage()
        and getattr(r, "function", None) == "dead"
    ]
    assert len(warnings) == 1, warnings
    assert monitor.reading("late") is None  # no longer watched


def _read(monitor: LagMonitor, name: str) -> tuple[int, int | None] | None:
    reading = monitor.reading(name)
    if reading is None or reading.lag is None:
        return None
    return reading.lag, reading.partitions
