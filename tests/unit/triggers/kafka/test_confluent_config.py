"""``attributes.client``: the spec's choice of Kafka client, and the same attributes as
librdkafka settings for the confluent-kafka consumer thread (tickrun.triggers.kafka.confluent)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tickrun.functions.errors import SpecError, TriggerConfigError
from tickrun.functions.spec import parse_spec
from tickrun.triggers.kafka.config import KafkaConfig, rdkafka_settings


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


def test_kafka_python_stays_the_default() -> None:
    fn, trig = _spec()
    assert KafkaConfig.from_spec(trig, fn.name).client == "kafka-python"


def test_an_unknown_client_is_refused_with_the_choices() -> None:
    with pytest.raises(SpecError) as err:
        _spec(client="librdkafka")
    assert "confluent-kafka" in str(err.value)


def test_confluent_settings_mirror_the_attributes() -> None:
    fn, trig = _spec(
        client="confluent-kafka",
        initialOffset="latest",
        sessionTimeout="6s",
        heartbeatInterval="1s",
        rebalanceTimeout="30s",
        fetchMin=10,
        fetchMax=1_000_000,
        maxWaitTime="20ms",
    )
    cfg = KafkaConfig.from_spec(trig, fn.name)
    assert cfg.client == "confluent-kafka"
    c = rdkafka_settings(cfg, "consumer")
    assert c["bootstrap.servers"] == "127.0.0.1:9092,127.0.0.1:9093"
    assert c["group.id"] == "signals"
    assert c["auto.offset.reset"] == "latest"
    # At-least-once: neither librdkafka's auto-commit nor its offset store moves anything.
    assert c["enable.auto.commit"] is False
    assert c["enable.auto.offset.store"] is False
    assert c["allow.auto.create.topics"] is False
    assert c["session.timeout.ms"] == 6000
    assert c["heartbeat.interval.ms"] == 1000
    assert c["max.poll.interval.ms"] == 30_000
    assert (c["fetch.min.bytes"], c["fetch.max.bytes"], c["fetch.wait.max.ms"]) == (
        10,
        1_000_000,
        20,
    )
    assert c["receive.message.max.bytes"] > c["fetch.max.bytes"]
    assert c["security.protocol"] == "plaintext"
    p = rdkafka_settings(cfg, "producer")
    assert "group.id" not in p and "fetch.max.bytes" not in p
    assert p["acks"] == "all"
    assert p["client.id"] == c["client.id"] == "tickrun-sig-ticks"


def test_sasl_and_tls_map_to_librdkafka_names() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    fn, trig = _spec(
        client="confluent-kafka",
        sasl={"enable": True, "user": "alice", "password": "s3cret", "mechanism": "SCRAM-SHA-512"},
        tls={
            "enable": True,
            "caCert": pem,
            "insecureSkipVerify": True,
            "accessCertificate": "/etc/certs/client.pem",
            "accessKey": "/etc/certs/client.key",
        },
    )
    cfg = KafkaConfig.from_spec(trig, fn.name)
    for role in ("consumer", "producer"):
        s = rdkafka_settings(cfg, role)
        assert s["security.protocol"] == "sasl_ssl"
        assert (s["sasl.mechanism"], s["sasl.username"], s["sasl.password"]) == (
            "SCRAM-SHA-512",
            "alice",
            "s3cret",
        )
        assert s["ssl.ca.pem"] == pem
        assert s["enable.ssl.certificate.verification"] is False
        assert s["ssl.endpoint.identification.algorithm"] == "none"
        assert s["ssl.certificate.location"] == "/etc/certs/client.pem"
        assert s["ssl.key.location"] == "/etc/certs/client.key"
    assert "s3cret" not in repr(cfg), "no secrets in the config's repr"


def test_a_missing_confluent_kafka_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fn, trig = _spec(client="confluent-kafka")
    real = importlib.util.find_spec

    def without_confluent(name: str, *args: Any) -> Any:
        return None if name == "confluent_kafka" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_confluent)
    with pytest.raises(TriggerConfigError) as err:
        KafkaConfig.from_spec(trig, fn.name)
    assert "confluent-kafka" in str(err.value) and "not installed" in str(err.value)
