"""Function specs: real Nuclio files load; bad ones are refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickrun.functions.errors import SpecError
from tickrun.functions.spec import load_spec, load_spec_text, parse_duration_s, parse_spec
from tickrun.triggers.cron.spec import CronTriggerSpec
from tickrun.triggers.http.spec import HttpTriggerSpec
from tickrun.triggers.kafka.spec import KafkaTriggerSpec

SPECS = Path(__file__).resolve().parents[3] / "fixtures" / "specs"


def test_nuclio_exported_helloworld_loads() -> None:
    spec = load_spec(SPECS / "good" / "nuclio-helloworld.yaml")
    assert spec.api_version == "nuclio.io/v1beta1"
    assert spec.name == "helloworld"
    assert spec.spec.handler_module == "helloworld"
    assert spec.spec.event_timeout_s is None or spec.spec.event_timeout_s >= 0
    trigger = spec.spec.triggers["default-http"]
    assert isinstance(trigger, HttpTriggerSpec)
    assert trigger.slots == 1
    assert trigger.worker_availability_timeout_ms == 10_000
    assert spec.spec.resources.requests.cpus == pytest.approx(0.025)
    assert spec.spec.resources.requests.memory_bytes == 1024**2


def test_kafka_and_cron_attributes_are_typed() -> None:
    spec = load_spec(SPECS / "good" / "nuclio-kafka.yaml")
    kafka = spec.spec.triggers["klines"]
    cron = spec.spec.triggers["every-minute"]
    assert isinstance(kafka, KafkaTriggerSpec) and isinstance(cron, CronTriggerSpec)
    assert kafka.attributes.brokers == ["kafka-0:9092", "kafka-1:9092"]
    assert kafka.attributes.session_timeout_s == 10.0
    assert kafka.attributes.sasl.mechanism == "SCRAM-SHA-256"
    assert "s3cret" not in repr(kafka.attributes.sasl)  # secrets stay out of reprs and logs
    assert cron.attributes.schedule == "*/1 * * * *"
    assert spec.spec.env_dict() == {"SYMBOL": "BTCUSDT"}
    assert spec.spec.build.commands == ["pip install ta==0.11.0"]
    assert spec.spec.requirements == ["pandas>=2"]
    assert spec.spec.resources.limits.memory_bytes == 2 * 1024**3


@pytest.mark.parametrize(
    ("name", "field", "needle"),
    [
        ("unknown-field.yaml", "spec.minReplica", "did you mean 'minReplicas'"),
        ("bad-trigger-attr.yaml", "spec.triggers.k.attributes.initialOfset", "initialOffset"),
        ("min-over-max.yaml", "spec", "greater than maxReplicas"),
        ("bad-runtime.yaml", "spec.runtime", "tickrun runs Python functions"),
        ("bad-kind.yaml", "spec.triggers.q", "rabbit-mq"),
    ],
)
def test_bad_specs_name_the_field(name: str, field: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(SPECS / "bad" / name)
    fields = info.value.detail
    assert isinstance(fields, list)
    assert any(f["field"] == field and needle in f["message"] for f in fields), fields
    assert field in info.value.message


def test_bad_yaml_says_where() -> None:
    with pytest.raises(SpecError, match=r"not valid YAML at line \d+"):
        load_spec(SPECS / "bad" / "bad-yaml.yaml")


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read function spec"):
        load_spec(tmp_path / "nope.yaml")


def test_default_http_trigger_added_unless_disabled() -> None:
    spec = parse_spec({"metadata": {"name": "f"}})
    kinds = [t.kind for t in spec.spec.effective_triggers()]
    assert kinds == ["http"]
    spec = parse_spec({"metadata": {"name": "f"}, "spec": {"disableDefaultHTTPTrigger": True}})
    assert spec.spec.effective_triggers() == []


def test_export_round_trips_with_nuclio_names() -> None:
    text = (SPECS / "good" / "nuclio-kafka.yaml").read_text()
    spec = load_spec_text(text)
    again = parse_spec(spec.to_yaml_dict())
    assert again == spec
    exported = spec.to_yaml_dict()
    assert exported["spec"]["triggers"]["klines"]["attributes"]["consumerGroup"] == "signals"
    timed = parse_spec({"metadata": {"name": "f"}, "spec": {"eventTimeout": "1m30s"}})
    assert timed.to_yaml_dict()["spec"]["eventTimeout"] == "90s"  # Go duration, as Nuclio reads


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), (3, 3.0), ("1.5", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["10x", "s", "-1s", True, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(bad)


def test_handler_without_entrypoint_defaults_to_handler() -> None:
    spec = parse_spec({"metadata": {"name": "f"}, "spec": {"handler": "main"}})
    assert spec.spec.handler == "main:handler"


def test_replica_bounds() -> None:
    assert parse_spec(
        {"metadata": {"name": "f"}, "spec": {"replicas": 3}}
    ).spec.replica_bounds() == (3, 3)
    spec = parse_spec({"metadata": {"name": "f"}, "spec": {"minReplicas": 0, "maxReplicas": 4}})
    assert spec.spec.replica_bounds() == (0, 4)
