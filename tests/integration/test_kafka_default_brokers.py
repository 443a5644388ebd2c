"""TICKRUN_KAFKA_BROKERS with a real broker: a function whose Kafka trigger names no brokers,
deployed to a real controller that has the variable, consumes from the broker (the brokers
reach its sandboxed replica through the stored spec, never through the controller's
environment), and the controller's lag monitor reads the same brokers. ``tickrun serve`` of
such a function, with no controller, reads the variable from its own environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_controller_harness import ControllerProc, cleanup, wait_for
from tests.peers import KafkaBroker
from tests.support.kafka_functions import produce, read_topic
from tests.support.lag_functions import group_lag, spec_of, write_function
from tests.support.processes import ServedFunction
from tickrun.functions.settings import KAFKA_BROKERS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 2
RECORDS = 30

# The result goes to the trigger's outputTopic: which record, and whether the replica's own
# environment held the variable (a controller's replica must not: its spec names the brokers).
HANDLER = """
import os


def handler(context, event):
    return {"i": event.body["i"], "env": os.environ.get("TICKRUN_KAFKA_BROKERS")}
"""


def _trigger(topic: str, group: str, out: str) -> dict[str, Any]:
    # No `brokers`: the cluster's default is meant.
    return {
        "kind": "kafka-cluster",
        "attributes": {
            "topics": [topic],
            "consumerGroup": group,
            "outputTopic": out,
            "sessionTimeout": "6s",
            "heartbeatInterval": "1s",
            "commitInterval": "200ms",
        },
    }


def _results(brokers: str, out: str) -> list[dict[str, Any]]:
    records = read_topic(brokers, out, RECORDS, timeout_s=60)
    return [json.loads(r.value) for r in records]


def test_a_function_without_brokers_consumes_through_the_controllers_default(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topic, out, group, name = "dflt-in", "dflt-out", "dflt-g", "dfltfn"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    kafka_broker.create_topic(out, partitions=1)
    env = dict(os.environ)
    env[KAFKA_BROKERS.name] = brokers
    env["TICKRUN_LAG_INTERVAL_S"] = "0.5"
    ctl = ControllerProc(tmp_path / "state", env).start()
    try:
        # Autoscaled (min 1, max 2), so the controller reads the group's lag.
        spec = {"minReplicas": 1, "maxReplicas": 2, "triggers": {"in": _trigger(topic, group, out)}}
        folder = write_function(tmp_path, name, HANDLER, spec)
        assert "brokers" not in spec_of(folder)["spec"]["triggers"]["in"]["attributes"]
        ctl.client.deploy(spec_of(folder), folder)
        stored = ctl.client.get_function(name)["spec"]["spec"]["triggers"]["in"]["attributes"]
        assert stored["brokers"] == brokers.split(",")
        ctl.client.wait_ready(name, timeout_s=120)

        produce(brokers, topic, ({"i": i} for i in range(RECORDS)), partition_of=lambda i: i % 2)
        results = _results(brokers, out)
        assert sorted(r["i"] for r in results) == list(range(RECORDS))
        assert {r["env"] for r in results} == {None}, "the controller's env reached a replica"
        wait_for(lambda: group_lag(brokers, group, topic, PARTITIONS) == 0, 30, "offsets committed")
        # The controller's lag monitor reaches the broker through the stored spec too.
        wait_for(
            lambda: (ctl.client.get_function(name)["scale"] or {}).get("lag") == 0,
            20,
            "the controller's lag reading",
        )
    finally:
        cleanup(ctl)


def test_tickrun_serve_reads_the_variable_from_its_own_environment(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topic, out, group, name = "serve-dflt-in", "serve-dflt-out", "serve-dflt-g", "servedflt"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    kafka_broker.create_topic(out, partitions=1)
    spec = {"triggers": {"in": _trigger(topic, group, out)}}
    folder = write_function(tmp_path, name, HANDLER, spec)
    served = ServedFunction(folder, env={KAFKA_BROKERS.name: brokers}).start()
    try:
        produce(brokers, topic, ({"i": i} for i in range(RECORDS)), partition_of=lambda i: i % 2)
        results = _results(brokers, out)
        assert sorted(r["i"] for r in results) == list(range(RECORDS))
        assert {r["env"] for r in results} == {brokers}
    finally:
        assert served.terminate() == 0
