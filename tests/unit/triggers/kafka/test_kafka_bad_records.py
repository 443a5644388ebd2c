"""The parts that keep one bad record from stopping a partition: the brokers' size limits,
the dead-letter envelope, which produce failures may pass, and bodies the JSON parser gives up
on. The broker-facing paths are in tests/integration/test_kafka_oversized.py."""

from __future__ import annotations

import base64
import json
import time

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError

from tests.support.kafka_units import Record
from tickrun.functions.errors import TriggerError
from tickrun.functions.spec import parse_spec
from tickrun.triggers.kafka.config import KafkaConfig
from tickrun.triggers.kafka.envelope import (
    HEAD_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_HEADERS,
    SCHEMA,
    envelope_headers,
    envelope_key,
    envelope_value,
)
from tickrun.triggers.kafka.event import decode_value, to_event
from tickrun.triggers.kafka.failures import Unreadable, retriable
from tickrun.triggers.kafka.limits import (
    CLIENT_DEFAULT_BYTES,
    PRODUCER_BUFFER_BYTES,
    SizeLimits,
    admin_kwargs,
    parse_limits,
    read_limits,
    record_size,
)
from tickrun.triggers.kafka.publish import Publisher

MIB = 1024 * 1024


def _entry(value: str) -> dict[str, object]:
    # The shape kafka-python's describe_configs gives each config.
    return {"value": value, "read_only": False, "config_source": "STATIC_BROKER_CONFIG"}


# --- size limits ------------------------------------------------------------------------------


def test_limits_follow_the_broker_and_the_topics() -> None:
    described = {
        "topic": {
            "t.dlq": {"max.message.bytes": _entry(str(MIB))},
            "out": {"max.message.bytes": _entry(str(8 * MIB))},
            "new.dlq": {},  # not created yet: the broker's limit applies
        },
        "broker": {"1": {"message.max.bytes": _entry(str(4 * MIB))}},
    }
    limits = parse_limits(described, ["t.dlq", "out", "new.dlq"])
    assert limits.from_cluster
    assert limits.for_topic("t.dlq") == MIB
    assert limits.for_topic("out") == 8 * MIB
    assert limits.for_topic("new.dlq") == 4 * MIB
    assert limits.for_topic("anything") == 4 * MIB
    assert limits.max_request_bytes == 8 * MIB, "the producer may write the largest"
    assert limits.smallest_bytes == MIB


def test_limits_when_the_cluster_says_nothing_usable() -> None:
    unusable = [
        {},
        {"topic": {"t": {}}},
        {"broker": {"1": {"message.max.bytes": 7}}},  # not kafka-python's entry shape
        {"broker": {"1": {"message.max.bytes": _entry("lots")}}, "topic": {"t": {"x": 1}}},
        {"broker": {"1": {"message.max.bytes": _entry("-1")}}},
    ]
    for described in unusable:
        limits = parse_limits(described, ["t"])
        assert limits == SizeLimits(), described
        assert not limits.from_cluster
        assert limits.max_request_bytes == CLIENT_DEFAULT_BYTES


def test_the_producer_limit_is_capped_by_its_buffer() -> None:
    limits = SizeLimits(default_bytes=MIB, topics={"huge": 512 * MIB}, from_cluster=True)
    assert limits.max_request_bytes == PRODUCER_BUFFER_BYTES


def test_unreachable_brokers_leave_the_client_default_quickly() -> None:
    started = time.monotonic()
    limits = read_limits(
        {"bootstrap_servers": ["127.0.0.1:9"], "bootstrap_timeout_ms": 500, "group_id": "g"},
        ["t.dlq"],
    )
    assert limits == SizeLimits()
    assert time.monotonic() - started < 10


def test_admin_kwargs_keep_only_connection_settings() -> None:
    attrs = {"brokers": "127.0.0.1:9", "topics": ["t"], "consumerGroup": "g"}
    trigger = {"kind": "kafka-cluster", "attributes": attrs}
    fn = parse_spec({"metadata": {"name": "f"}, "spec": {"triggers": {"ticks": trigger}}})
    config = KafkaConfig.from_spec(fn.spec.triggers["ticks"], "f")  # type: ignore[arg-type]
    kwargs = admin_kwargs(config.client_kwargs("producer"))
    assert kwargs["bootstrap_servers"] == ["127.0.0.1:9"]
    assert kwargs["client_id"] == "tickrun-f-ticks"
    assert "acks" not in kwargs and "linger_ms" not in kwargs
    consumer = admin_kwargs(config.client_kwargs("consumer"))
    assert "group_id" not in consumer and "max_poll_records" not in consumer


def test_record_size_counts_key_value_and_headers() -> None:
    base = record_size(None, None, [])
    assert record_size(b"k" * 10, b"v" * 100, [("h", b"x" * 5)]) >= base + 10 + 100 + 6
    assert record_size(None, b"v" * MIB, []) > MIB


def test_publisher_refuses_a_value_its_topic_cannot_take() -> None:
    publisher = Publisher("f", "ticks")
    publisher.attach(object(), SizeLimits(default_bytes=8 * MIB, topics={"out": MIB}))
    assert publisher.too_large("out", b"x" * 100, None, []) is None
    why = publisher.too_large("out", b"x" * (2 * MIB), b"k", [])
    assert why is not None and str(MIB) in why and "'out'" in why
    assert publisher.too_large("other", b"x" * (2 * MIB), b"k", []) is None
    # Refused before the producer is touched (it is a bare object here).
    with pytest.raises(TriggerError) as caught:
        publisher.send("out", b"x" * (2 * MIB))
    assert isinstance(caught.value.__cause__, MessageSizeTooLargeError)
    assert not retriable(caught.value), "an envelope, not retries"


# --- which produce failures may pass ------------------------------------------------------------


def test_retriable_produce_failures() -> None:
    assert retriable(TriggerError("kafka producer is not connected"))
    assert retriable(KafkaTimeoutError("no ack"))
    assert not retriable(MessageSizeTooLargeError("too big"))
    assert not retriable(TopicAuthorizationFailedError("no"))
    wrapped = TriggerError("cannot produce")
    wrapped.__cause__ = MessageSizeTooLargeError("too big")
    assert not retriable(wrapped)
    assert not retriable(ValueError("headers"))


# --- the envelope -----------------------------------------------------------------------------


def _fields(record: object, **over: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "record": record,
        "reason": "too-large",
        "error": "ValueError: refusing",
        "dead_letter_error": "too big",
        "attempts": 4,
        "function": "f",
        "group": "g",
        "size": 5 * MIB,
        "record_size": 5 * MIB + 200,
    }
    fields.update(over)
    return fields


def test_envelope_has_where_and_why_but_not_the_value() -> None:
    value = b'{"bars": "' + "é".encode() * (3 * MIB) + b'"}'
    headers = [("source", b"feed"), ("bin", b"\xff\x00\x01"), ("none", None)]
    record = Record("klines", 3, 41, 1700000000000, b"BTCUSDT", value, headers)
    data = envelope_value(MIB, **_fields(record, size=len(value)))
    assert len(data) < MAX_ENVELOPE_BYTES
    env = json.loads(data)
    assert env["envelope"] == SCHEMA
    assert (env["topic"], env["partition"], env["offset"]) == ("klines", 3, 41)
    assert env["timestamp"] == 1700000000000
    assert env["size"] == len(value)
    assert env["key"] == {"size": 7, "text": "BTCUSDT", "truncated": False}
    head = env["value"]
    assert head["truncated"] and head["size"] == len(value)
    # Cut at a character boundary, never in the middle of "é" (2 bytes).
    assert head["text"].startswith('{"bars": "é')
    assert len(head["text"].encode()) in (HEAD_BYTES, HEAD_BYTES - 1)
    assert env["headers"] == [
        {"name": "source", "size": 4, "text": "feed", "truncated": False},
        {
            "name": "bin",
            "size": 3,
            "base64": base64.b64encode(b"\xff\x00\x01").decode(),
            "truncated": False,
        },
        {"name": "none", "size": 0, "text": "", "truncated": False},
    ]
    assert env["headers_truncated"] is False
    assert (env["error"], env["dead_letter_error"], env["attempts"]) == (
        "ValueError: refusing",
        "too big",
        4,
    )
    assert env["function"] == "f" and env["consumer_group"] == "g"
    assert env["failed_at"].endswith("+00:00")


def test_envelope_bounds_headers_and_shrinks_to_fit_a_small_topic() -> None:
    headers = [(f"h{i}", b"v" * 5000) for i in range(100)]
    record = Record("t", 0, 7, 1, b"k" * 5000, b"x" * MIB, headers)
    env = json.loads(envelope_value(10 * MIB, **_fields(record)))
    assert len(env["headers"]) == MAX_HEADERS and env["headers_truncated"] is True
    assert all(h["truncated"] and h["size"] == 5000 for h in env["headers"])
    assert env["key"]["truncated"] is True
    # A dead-letter topic that takes only 16 KB: the short form, without key, head, headers.
    small = envelope_value(16 * 1024, **_fields(record))
    assert len(small) < 12 * 1024
    short = json.loads(small)
    assert short["key"] == {"size": 5000, "omitted": True}
    assert short["value"] == {"size": MIB, "omitted": True}
    assert short["headers"] == [] and short["headers_truncated"] is True
    assert short["offset"] == 7 and short["error"] == "ValueError: refusing"


def test_envelope_of_an_unreadable_record() -> None:
    record = Unreadable("t", 2, 9)
    env = json.loads(envelope_value(MIB, **_fields(record, size=None, record_size=None)))
    assert (env["topic"], env["partition"], env["offset"]) == ("t", 2, 9)
    assert env["key"] is None and env["value"] is None and env["headers"] == []
    assert env["size"] is None


def test_envelope_record_key_and_headers() -> None:
    assert envelope_key(b"BTCUSDT") == b"BTCUSDT"
    assert envelope_key(b"k" * 5000) is None, "a huge key stays out of the record"
    assert envelope_key(None) is None
    meta = [("x-tickrun-offset", b"41")]
    assert envelope_headers(meta, "too-large") == [
        ("content-type", b"application/json"),
        ("x-tickrun-envelope", b"too-large"),
        ("x-tickrun-offset", b"41"),
    ]


# --- bodies the parser gives up on ------------------------------------------------------------


def test_json_nested_too_deep_stays_bytes() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    assert decode_value(deep, None) == (deep, "application/octet-stream")
    assert decode_value(deep, "application/json") == (deep, "application/json")
    event = to_event(Record("t", 0, 0, 1, None, deep, []), "ticks")
    assert event.body == deep
