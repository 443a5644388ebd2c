"""Spec attributes → kafka-python settings, and the spec's validation of them."""

from __future__ import annotations

from typing import Any

import pytest

from tickrun.functions.errors import SpecError
from tickrun.functions.spec import parse_spec
from tickrun.triggers.kafka.config import KafkaConfig


def _spec(**attrs: Any) -> Any:
    base: dict[str, Any] = {
        "brokers": "127.0.0.1:9092, 127.0.0.1:9093",
        "topics": ["klines"],
        "consumerGroup": "signals",
    }
    base.update(attrs)
    fn = parse_spec(
        {
            "metadata": {"name": "sig"},
            "spec": {"triggers": {"ticks": {"kind": "kafka-cluster", "attributes": base}}},
        }
    )
    return fn, fn.spec.triggers["ticks"]


def test_defaults_map_to_manual_commits() -> None:
    fn, trig = _spec()
    cfg = KafkaConfig.from_spec(trig, fn.name)
    assert cfg.brokers == ("127.0.0.1:9092", "127.0.0.1:9093")
    c = cfg.consumer
    assert c["enable_auto_commit"] is False
    assert c["allow_auto_create_topics"] is False
    assert c["group_id"] == "signals"
    assert c["security_protocol"] == "PLAINTEXT"
    assert c["fetch_max_wait_ms"] == 50
    assert cfg.on_failure == "dead-letter"
    assert cfg.dead_letter_topic_for("klines") == "klines.dlq"


def test_nuclio_durations_and_sasl() -> None:
    fn, trig = _spec(
        sessionTimeout="6s",
        heartbeatInterval="500ms",
        sasl={
            "enable": True,
            "user": "u",
            "password": "hunter2-secret",
            "mechanism": "SCRAM-SHA-512",
        },
    )
    cfg = KafkaConfig.from_spec(trig, fn.name)
    assert cfg.consumer["session_timeout_ms"] == 6000
    assert cfg.consumer["heartbeat_interval_ms"] == 500
    assert cfg.consumer["security_protocol"] == "SASL_PLAINTEXT"
    assert cfg.producer["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "hunter2-secret" not in repr(cfg), "the password must not show up in logs of the config"


def test_backoff_is_exponential_and_capped() -> None:
    fn, trig = _spec(retryBackoff="100ms", retryBackoffMax="1s")
    cfg = KafkaConfig.from_spec(trig, fn.name)
    assert [cfg.retry.delay_s(a) for a in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_explicit_dead_letter_topic() -> None:
    fn, trig = _spec(deadLetterTopic="poison")
    assert KafkaConfig.from_spec(trig, fn.name).dead_letter_topic_for("klines") == "poison"


@pytest.mark.parametrize(
    ("attrs", "needle"),
    [
        ({"brokers": "kafka"}, "host:port"),
        ({"topics": []}, "topics"),
        ({"topics": ["bad topic"]}, "valid Kafka topic"),
        ({"heartbeatInterval": "20s"}, "heartbeatInterval"),
        ({"deadLetterTopic": "klines"}, "deadLetterTopic"),
        ({"onFailure": "explode"}, "onFailure"),
        ({"sasl": {"enable": True}}, "user"),
        ({"consumerGroupp": "x"}, "consumerGroupp"),
    ],
)
def test_invalid_attributes_are_refused(attrs: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError) as info:
        _spec(**attrs)
    assert needle in str(info.value.message) + str(info.value.detail)
