"""Start problems are reported with the brokers and the cause; the replica stays up, not
ready, and keeps retrying until the problem goes away."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.peers import KafkaBroker
from tests.support.kafka_functions import (
    done,
    produce,
    readyz,
    serve,
    wait_for,
    write_function,
)
from tests.support.processes import ServedFunction, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def _errors(fn: ServedFunction) -> list[dict[str, object]]:
    return [
        r
        for r in fn.log_records()
        if r.get("level") == "error"
        and str(r.get("logger", "")).startswith("tickrun.triggers.kafka")
    ]


def _not_ready_with_error(fn: ServedFunction, needle: str) -> dict[str, object]:
    wait_for(
        lambda: any(needle in str(r.get("message")) for r in _errors(fn)),
        60,
        f"an error log mentioning {needle!r}",
    )
    status, body = readyz(fn)
    assert status == 503
    assert body.get("triggers_not_ready") == ["ticks"]
    assert fn.proc is not None and fn.proc.poll() is None, "the replica keeps running"
    return next(r for r in _errors(fn) if needle in str(r.get("message")))


def test_unreachable_brokers(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    fn = serve(write_function(tmp_path, brokers=dead, topics=["t"], group="g"))
    try:
        record = _not_ready_with_error(fn, dead)
    finally:
        fn.terminate()
    # kafka-python 3 says "Unable to bootstrap", 2.x "NoBrokersAvailable".
    assert "bootstrap" in str(record["message"]) or "NoBrokersAvailable" in str(record["message"])
    assert record["brokers"] == [dead]
    assert "retrying in" in str(record["message"])
    assert "Traceback" not in str(record)


def test_unknown_topic_then_created(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bs = kafka_broker.bootstrap_servers
    topic = f"later-{uuid.uuid4().hex[:8]}"
    fn = serve(write_function(tmp_path, brokers=bs, topics=[topic], group=f"g-{topic}"))
    try:
        record = _not_ready_with_error(fn, topic)
        assert "do not exist" in str(record["message"])
        kafka_broker.create_topic(topic, partitions=1)
        wait_for(lambda: readyz(fn)[0] == 200, 60, "ready once the topic exists")
        produce(bs, topic, [{"i": 1}])
        wait_for(lambda: len(done(tmp_path)) == 1, 30, "the event handled")
    finally:
        fn.terminate()


def test_sasl_against_a_plaintext_listener(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bs = kafka_broker.bootstrap_servers
    fn = serve(
        write_function(
            tmp_path,
            brokers=bs,
            topics=["t"],
            group="g-sasl",
            attributes={
                "sasl": {
                    "enable": True,
                    "user": "alice",
                    "password": "not-logged-42",
                    "mechanism": "SCRAM-SHA-256",
                }
            },
        )
    )
    try:
        record = _not_ready_with_error(fn, bs)
    finally:
        fn.terminate()
    assert "not-logged-42" not in "".join(fn.stdout + fn.stderr), "no secrets in logs"
    assert "SASL_PLAINTEXT, SASL SCRAM-SHA-256 as user 'alice'" in str(record["message"])
    print("\nSASL error as logged:", record["message"])
