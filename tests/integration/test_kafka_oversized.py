"""One bad Kafka record never stops a partition (issue 11), against a real broker whose
``message.max.bytes`` is raised to 8 MiB, so 5 MB records exist on the source topic.

- A failing 5 MB record whose dead-letter topic takes only 1 MiB goes there as an envelope
  (where it came from, key, size, error, headers; not the value), and the records behind it
  are handled and committed.
- With a dead-letter topic that inherits the broker's 8 MiB, the same record is dead-lettered
  as it is: the trigger's producer follows the broker's limit (kafka-python's own default,
  1 MiB, would refuse it).
- A record the client cannot decode at all (a header name that is not UTF-8, which the broker
  accepts) goes as an envelope too, instead of stopping the consumer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from tests.peers import KafkaBroker, PeerUnavailable
from tests.support.kafka_functions import (
    committed,
    done,
    handled,
    metrics_text,
    produce,
    read_topic,
    serve,
    wait_for,
    write_function,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

BROKER_MAX_BYTES = 8 * 1024 * 1024
DLQ_MAX_BYTES = 1024 * 1024
BIG_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def big_broker() -> Iterator[KafkaBroker]:
    """A broker of its own: the session broker keeps Kafka's 1 MB default."""
    broker = KafkaBroker(
        extra_properties={
            "message.max.bytes": str(BROKER_MAX_BYTES),
            "replica.fetch.max.bytes": str(BROKER_MAX_BYTES),
        }
    )
    try:
        broker.start()
    except PeerUnavailable as exc:
        pytest.fail(f"Kafka peer unavailable: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=[1, 4], ids=["consumer-thread", "handler-pool"])
def slots(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def _names(prefix: str) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-{tag}", f"{prefix}-{tag}-dead", f"group-{prefix}-{tag}"


def _count(text: str, name: str, topic: str) -> float:
    """A counter's value for ``topic`` in a replica's ``/metrics`` text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("topic") == topic
    )


def _committed(brokers: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets; none yet while a fresh broker has no group coordinator."""
    try:
        return committed(brokers, group, topic)
    except KafkaError:
        return {}


def _big_body() -> bytes:
    """A 5 MB JSON body the test handler refuses on every attempt."""
    head = b'{"poison": true, "pad": "'
    tail = b'"}'
    return head + b"x" * (BIG_BYTES - len(head) - len(tail)) + tail


def _bodies(big: bytes) -> list[Any]:
    return [{"i": 0}, {"i": 1}, big, {"i": 3}, {"i": 4}]


def _serve_until_past(
    broker: KafkaBroker,
    root: Path,
    topic: str,
    dlq: str,
    group: str,
    slots: int,
    *,
    commit_to: dict[int, int] | None = None,
    dead_letters: int = 1,
    **attributes: Any,
) -> tuple[list[Any], str]:
    """Serve the test function until the group's offsets reach ``commit_to`` (default: 5 on
    partition 0, past every record); returns the dead-letter topic's records and the
    replica's metrics."""
    bs = broker.bootstrap_servers
    expected = commit_to or {0: 5}
    fn = serve(
        write_function(
            root,
            brokers=bs,
            topics=[topic],
            group=group,
            num_workers=slots,
            attributes={"maxRetries": 1, "deadLetterTopic": dlq, **attributes},
        )
    )
    try:
        wait_for(lambda: _committed(bs, group, topic) == expected, 90, f"commits {expected}")
        dead = read_topic(bs, dlq, expect=dead_letters)
        text = metrics_text(fn)
    finally:
        assert fn.terminate() == 0
    return dead, text


def test_a_record_too_big_for_the_dead_letter_topic_goes_as_an_envelope(
    big_broker: KafkaBroker, tmp_path: Path, slots: int
) -> None:
    bs = big_broker.bootstrap_servers
    topic, dlq, group = _names("big")
    big_broker.create_topic(topic)
    big_broker.create_topic(dlq, configs={"max.message.bytes": str(DLQ_MAX_BYTES)})
    big = _big_body()
    produce(
        bs,
        topic,
        _bodies(big),
        key_of=lambda i: f"k{i}".encode(),
        headers=[("source", b"test"), ("raw", b"\xff\x00")],
        max_request_size=BROKER_MAX_BYTES,
    )
    dead, text = _serve_until_past(big_broker, tmp_path, topic, dlq, group, slots)

    assert [h.offset for h in done(tmp_path)] == [0, 1, 3, 4]
    attempts = [h for h in handled(tmp_path) if h.kind == "A" and h.offset == 2]
    assert len(attempts) == 2, "one try plus maxRetries=1, then the dead letter"
    assert len(dead) == 1
    rec = dead[0]
    assert len(rec.value) < 64 * 1024, "the envelope, not the 5 MB record"
    assert rec.key == b"k2"
    headers = dict(rec.headers)
    assert headers["content-type"] == b"application/json"
    assert headers["x-tickrun-envelope"] == b"too-large"
    assert headers["x-tickrun-offset"] == b"2"
    assert "source" not in headers, "original headers are inside the envelope"
    env = json.loads(rec.value)
    assert env["envelope"] == "tickrun.kafka.dead-letter/v1"
    assert (env["topic"], env["partition"], env["offset"]) == (topic, 0, 2)
    assert env["size"] == len(big)
    assert env["record_size"] > len(big)
    assert env["key"] == {"size": 2, "text": "k2", "truncated": False}
    assert env["value"]["truncated"] is True
    assert env["value"]["text"].startswith('{"poison": true')
    assert env["headers"] == [
        {"name": "source", "size": 4, "text": "test", "truncated": False},
        {"name": "raw", "size": 2, "base64": "/wA=", "truncated": False},
    ]
    assert env["error"].startswith("ValueError: refusing")
    assert str(DLQ_MAX_BYTES) in env["dead_letter_error"]
    assert env["attempts"] == 2
    assert env["consumer_group"] == group
    assert _count(text, "tickrun_kafka_dead_letter_envelopes_total", topic) == 1
    assert _count(text, "tickrun_kafka_dead_lettered_total", topic) == 1


def test_the_producer_follows_the_brokers_raised_limit(
    big_broker: KafkaBroker, tmp_path: Path
) -> None:
    bs = big_broker.bootstrap_servers
    topic, dlq, group = _names("asis")
    big_broker.create_topic(topic)
    big_broker.create_topic(dlq)  # inherits the broker's 8 MiB
    big = _big_body()
    produce(
        bs,
        topic,
        _bodies(big),
        key_of=lambda i: f"k{i}".encode(),
        max_request_size=BROKER_MAX_BYTES,
    )
    dead, text = _serve_until_past(big_broker, tmp_path, topic, dlq, group, 1)

    assert [h.offset for h in done(tmp_path)] == [0, 1, 3, 4]
    assert len(dead) == 1
    rec = dead[0]
    assert rec.value == big, "dead-lettered as it is, all 5 MB"
    assert rec.key == b"k2"
    headers = dict(rec.headers)
    assert "x-tickrun-envelope" not in headers
    assert headers["x-tickrun-offset"] == b"2"
    assert headers["x-tickrun-error"].startswith(b"ValueError: refusing")
    assert _count(text, "tickrun_kafka_dead_letter_envelopes_total", topic) == 0
    assert _count(text, "tickrun_kafka_dead_lettered_total", topic) == 1


def test_a_result_too_big_for_the_output_topic_fails_its_event_and_the_partition_moves_on(
    big_broker: KafkaBroker, tmp_path: Path, slots: int
) -> None:
    bs = big_broker.bootstrap_servers
    topic, dlq, group = _names("bigout")
    out = f"{topic}-out"
    big_broker.create_topic(topic)
    big_broker.create_topic(dlq)
    big_broker.create_topic(out, configs={"max.message.bytes": str(DLQ_MAX_BYTES)})
    huge_reply = "y" * (2 * DLQ_MAX_BYTES)
    bodies = [{"i": i, "reply": huge_reply if i == 2 else f"r{i}"} for i in range(5)]
    produce(bs, topic, bodies, max_request_size=BROKER_MAX_BYTES)
    dead, _ = _serve_until_past(big_broker, tmp_path, topic, dlq, group, slots, outputTopic=out)
    outputs = read_topic(bs, out, expect=4)

    assert [r.value for r in outputs] == [b"r0", b"r1", b"r3", b"r4"]
    attempts = [h for h in handled(tmp_path) if h.kind == "A" and h.offset == 2]
    assert len(attempts) == 2, "the refused output fails its event: one retry, then dead letter"
    assert len(dead) == 1
    rec = dead[0]
    assert json.loads(rec.value) == bodies[2], "the input, as it was"
    error = dict(rec.headers)["x-tickrun-error"].decode()
    assert f"cannot produce to topic {out!r}" in error
    assert str(DLQ_MAX_BYTES) in error


class _NotUtf8(str):
    """A header name whose wire form is not UTF-8: what a non-Java client can send. Only the
    test's producer uses it; the broker stores the record as it came."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-name"


def test_a_record_the_client_cannot_decode_goes_as_an_envelope(
    big_broker: KafkaBroker, tmp_path: Path, slots: int
) -> None:
    bs = big_broker.bootstrap_servers
    topic, dlq, group = _names("unreadable")
    big_broker.create_topic(topic, partitions=2)
    big_broker.create_topic(dlq)
    bad = {(0, 2), (1, 0)}  # (partition, offset)
    producer = KafkaProducer(bootstrap_servers=bs, acks="all")
    try:
        # One request per record, so each bad one is a batch of its own.
        for partition, count in ((0, 5), (1, 3)):
            for i in range(count):
                headers = [(_NotUtf8("bad-name"), b"v")] if (partition, i) in bad else []
                value = json.dumps({"i": i}).encode()
                producer.send(topic, value, partition=partition, headers=headers).get(30)
    finally:
        producer.close()
    dead, text = _serve_until_past(
        big_broker, tmp_path, topic, dlq, group, slots, commit_to={0: 5, 1: 3}, dead_letters=2
    )

    seen = {(h.partition, h.offset) for h in done(tmp_path)}
    assert seen == {(0, 0), (0, 1), (0, 3), (0, 4), (1, 1), (1, 2)}
    assert not [h for h in handled(tmp_path) if (h.partition, h.offset) in bad]
    assert len(dead) == 2
    envelopes = [json.loads(rec.value) for rec in dead]
    assert {(e["topic"], e["partition"], e["offset"]) for e in envelopes} == {
        (topic, p, o) for p, o in bad
    }
    for rec, env in zip(dead, envelopes, strict=True):
        assert dict(rec.headers)["x-tickrun-envelope"] == b"unreadable"
        assert env["reason"] == "unreadable"
        assert env["size"] is None
        assert "cannot be read" in env["error"]
        assert "UnicodeDecodeError" in env["error"]
    assert _count(text, "tickrun_kafka_dead_letter_envelopes_total", topic) == 2
    assert _count(text, "tickrun_kafka_consumed_total", topic) == 8
