"""TICKRUN_KAFKA_BROKERS: a kafka-cluster trigger without brokers gets the controller's default
at deploy (stored in the spec, so the code folder, the lag monitor and KEDA see it); a replica
run without a controller reads the variable itself; neither is a clear 400 / config error."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.controller.platforms.test_k8s_manifests import OWNER, workload
from tickrun.controller.app import create_app
from tickrun.controller.builder.hashing import pack_dir
from tickrun.controller.kafka_defaults import with_default_brokers
from tickrun.controller.lag import LagMonitor
from tickrun.controller.platforms.kubernetes import keda
from tickrun.controller.platforms.sandbox import replica_env
from tickrun.controller.settings import Settings
from tickrun.functions.errors import SpecError, TriggerConfigError
from tickrun.functions.settings import KAFKA_BROKERS
from tickrun.functions.spec import FunctionSpec, parse_spec
from tickrun.triggers.kafka.config import KafkaConfig
from tickrun.triggers.kafka.spec import KafkaTriggerSpec

AUTH = {"Authorization": "Bearer sekret"}
Client = TestClient[web.Request, web.Application]
DEFAULT = ("kafka-a:9092", "kafka-b:9092")


def kafka(brokers: Any = None, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"topics": ["ticks"], "consumerGroup": "scorers"}
    if brokers is not None:
        attrs["brokers"] = brokers
    return {"kind": "kafka-cluster", "attributes": attrs, **extra}


def spec_with(**triggers: dict[str, Any]) -> FunctionSpec:
    return parse_spec(
        {
            "metadata": {"name": "scorer"},
            "spec": {"handler": "main:handler", "minReplicas": 0, "maxReplicas": 3,
                     "triggers": triggers},
        }
    )  # fmt: skip


def kafka_trigger(spec: FunctionSpec, key: str) -> KafkaTriggerSpec:
    trigger = spec.spec.triggers[key]
    assert isinstance(trigger, KafkaTriggerSpec)
    return trigger


def test_brokers_may_be_left_out_but_named_ones_are_still_checked() -> None:
    assert kafka_trigger(spec_with(k=kafka()), "k").attributes.brokers == []
    with pytest.raises(SpecError, match="host:port"):
        spec_with(k=kafka(["kafka"]))


def test_the_default_fills_only_triggers_without_brokers() -> None:
    spec = spec_with(implicit=kafka(), explicit=kafka("own:9092"))
    filled = with_default_brokers(spec, DEFAULT)
    assert kafka_trigger(filled, "implicit").attributes.brokers == list(DEFAULT)
    assert kafka_trigger(filled, "explicit").attributes.brokers == ["own:9092"]
    # The caller's spec is not changed, and the stored form (function.yaml) names them.
    assert kafka_trigger(spec, "implicit").attributes.brokers == []
    stored = filled.to_yaml_dict()["spec"]["triggers"]["implicit"]["attributes"]
    assert stored["brokers"] == list(DEFAULT)
    assert kafka_trigger(parse_spec(filled.to_yaml_dict()), "implicit").attributes.brokers == [
        *DEFAULT
    ]


def test_a_spec_naming_its_brokers_is_returned_as_is() -> None:
    spec = spec_with(k=kafka("own:9092"))
    assert with_default_brokers(spec, DEFAULT) is spec
    assert with_default_brokers(spec, ()) is spec


def test_no_brokers_and_no_default_names_the_field_and_the_variable() -> None:
    with pytest.raises(SpecError) as info:
        with_default_brokers(spec_with(ticks=kafka()), ())
    assert "spec.triggers.ticks.attributes.brokers" in info.value.message
    assert KAFKA_BROKERS.name in info.value.message
    assert info.value.detail == [
        {
            "field": "spec.triggers.ticks.attributes.brokers",
            "message": f"no brokers, and {KAFKA_BROKERS.name} is not set",
        }
    ]
    # A disabled trigger does not consume: it needs no brokers yet.
    disabled = spec_with(ticks=kafka(disabled=True))
    assert with_default_brokers(disabled, ()) is disabled


def test_the_lag_monitor_and_keda_read_the_filled_brokers() -> None:
    filled = with_default_brokers(spec_with(k=kafka()), DEFAULT)
    # The controller's own environment is not consulted: the spec says it.
    assert KafkaConfig.from_spec(kafka_trigger(filled, "k"), "scorer", env={}).brokers == DEFAULT
    monitor = LagMonitor()
    monitor.watch([("scorer", filled)])
    assert [s.config.brokers for s in monitor._sources["scorer"]] == [DEFAULT]
    obj = keda.scaled_object(workload(spec=filled), "tickrun-test", OWNER)
    kafka_triggers = [t for t in obj["spec"]["triggers"] if t["type"] == "kafka"]
    assert [t["metadata"]["bootstrapServers"] for t in kafka_triggers] == [",".join(DEFAULT)]


def test_a_replica_without_a_controller_falls_back_to_its_own_environment() -> None:
    trigger = kafka_trigger(spec_with(k=kafka()), "k")
    env = {KAFKA_BROKERS.name: "local-kafka:9092, other:9093"}
    cfg = KafkaConfig.from_spec(trigger, "scorer", env=env)
    assert cfg.brokers == ("local-kafka:9092", "other:9093")
    assert cfg.consumer["bootstrap_servers"] == ["local-kafka:9092", "other:9093"]
    assert cfg.producer["bootstrap_servers"] == ["local-kafka:9092", "other:9093"]
    named = kafka_trigger(spec_with(k=kafka("own:9092")), "k")
    assert KafkaConfig.from_spec(named, "scorer", env=env).brokers == ("own:9092",)


@pytest.mark.parametrize(
    ("env", "needle"),
    [({}, "is not set"), ({"TICKRUN_KAFKA_BROKERS": "nohost"}, "not host:port")],
)
def test_a_replica_without_usable_brokers_says_why(env: dict[str, str], needle: str) -> None:
    trigger = kafka_trigger(spec_with(k=kafka()), "k")
    with pytest.raises(TriggerConfigError) as info:
        KafkaConfig.from_spec(trigger, "scorer", env=env)
    assert needle in info.value.message
    assert KAFKA_BROKERS.name in info.value.message


def test_the_variable_is_parsed_and_checked_by_the_controller_settings() -> None:
    env = {KAFKA_BROKERS.name: " kafka-a:9092 ,kafka-b:9092 "}
    assert Settings.from_env(env).kafka_brokers == DEFAULT
    assert Settings.from_env({}).kafka_brokers == ()
    with pytest.raises(SpecError, match="not host:port"):
        Settings.from_env({KAFKA_BROKERS.name: "kafka-a"})


def test_the_controller_variable_never_reaches_a_replica_environment() -> None:
    host = {KAFKA_BROKERS.name: "kafka-a:9092", "PATH": "/usr/bin"}
    assert KAFKA_BROKERS.name not in replica_env(host, {}, {})
    # Unless the user puts it in the function's own env.
    assert replica_env(host, {KAFKA_BROKERS.name: "mine:9092"}, {})[KAFKA_BROKERS.name] == (
        "mine:9092"
    )


# --- through the controller's API ---------------------------------------------------------------


def _settings(tmp_path: Path, brokers: tuple[str, ...]) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        token="sekret",
        function_ports=False,
        kafka_brokers=brokers,
    )


async def _client(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[Client]:
    async for c in _client(_settings(tmp_path, ())):
        yield c


@pytest.fixture
async def with_default(tmp_path: Path) -> AsyncIterator[Client]:
    async for c in _client(_settings(tmp_path, DEFAULT)):
        yield c


def _body(tmp_path: Path, triggers: dict[str, Any]) -> dict[str, Any]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "main.py").write_text("def handler(context, event):\n    return 'hi'\n")
    return {
        # replicas: 0, so the test's controller starts no replica (and no Kafka client).
        "spec": {"metadata": {"name": "scorer"},
                 "spec": {"handler": "main:handler", "replicas": 0, "triggers": triggers}},
        "code": base64.b64encode(pack_dir(src)).decode(),
    }  # fmt: skip


async def test_deploy_without_brokers_or_default_is_a_400(bare: Client, tmp_path: Path) -> None:
    resp = await bare.post("/api/functions", json=_body(tmp_path, {"ticks": kafka()}), headers=AUTH)
    assert resp.status == 400
    body = await resp.json()
    assert "spec.triggers.ticks.attributes.brokers" in body["detail"]
    assert KAFKA_BROKERS.name in body["detail"]
    missing = await bare.get("/api/functions/scorer", headers=AUTH)
    assert missing.status == 404, "a refused deploy stores nothing"


async def test_deploy_stores_the_default_brokers(with_default: Client, tmp_path: Path) -> None:
    body = _body(tmp_path, {"ticks": kafka(), "own": kafka("own:9092")})
    resp = await with_default.post("/api/functions", json=body, headers=AUTH)
    assert resp.status == 202, await resp.text()
    got = await (await with_default.get("/api/functions/scorer", headers=AUTH)).json()
    triggers = got["spec"]["spec"]["triggers"]
    assert triggers["ticks"]["attributes"]["brokers"] == list(DEFAULT)
    assert triggers["own"]["attributes"]["brokers"] == ["own:9092"]
    # The function.yaml replicas and images load names them too.
    code = tmp_path / "state" / "code" / "scorer"
    (folder,) = [p for p in code.iterdir() if not p.name.startswith(".")]
    written = yaml.safe_load((folder / "function.yaml").read_text())
    assert written["spec"]["triggers"]["ticks"]["attributes"]["brokers"] == list(DEFAULT)
    await with_default.delete("/api/functions/scorer", headers=AUTH)
