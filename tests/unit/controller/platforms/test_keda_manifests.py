"""The KEDA ScaledObject of a function (TICKRUN_K8S_AUTOSCALER=keda): triggers from the spec's
Kafka, cron and CPU settings, cron firings as KEDA windows, and the deploy's warnings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.controller.platforms.test_k8s_manifests import OWNER, workload
from tickrun.controller.platforms.base import LAG_WITH_CPU, unacted_fields
from tickrun.controller.platforms.kubernetes import keda
from tickrun.controller.platforms.kubernetes.platform import KubernetesPlatform
from tickrun.functions.spec import FunctionSpec, parse_spec

NS = "tickrun-test"


def spec(**fields: Any) -> FunctionSpec:
    return parse_spec({"metadata": {"name": "scorer"}, "spec": {"handler": "main:h", **fields}})


KAFKA: dict[str, Any] = {
    "kind": "kafka-cluster",
    "attributes": {
        "brokers": ["k1:9092", "k2:9092"],
        "topics": ["ticks", "quotes"],
        "consumerGroup": "scorers",
        "initialOffset": "latest",
    },
}
CRON = {"kind": "cron", "attributes": {"schedule": "0 9 * * 1-5", "timezone": "Europe/London"}}


def test_kafka_cron_and_cpu_become_keda_triggers() -> None:
    s = spec(
        minReplicas=0,
        maxReplicas=6,
        targetLag=50,
        lagWindow="45s",
        scaleToZeroIdleTime="90s",
        targetCPU=70,
        disableDefaultHTTPTrigger=True,
        triggers={"in": KAFKA, "open": CRON},
    )
    obj = keda.scaled_object(workload(spec=s), NS, OWNER)
    assert (obj["apiVersion"], obj["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    meta = obj["metadata"]
    assert (meta["name"], meta["namespace"], meta["ownerReferences"]) == ("scorer", NS, [OWNER])
    assert meta["labels"]["tickrun.io/function"] == "scorer"
    body = obj["spec"]
    assert body["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "scorer",
    }
    assert (body["minReplicaCount"], body["maxReplicaCount"]) == (0, 6)
    assert body["cooldownPeriod"] == 90
    hpa = body["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert hpa["scaleDown"]["stabilizationWindowSeconds"] == 45
    kafka = [t for t in body["triggers"] if t["type"] == "kafka"]
    assert [t["metadata"] for t in kafka] == [
        {
            "bootstrapServers": "k1:9092,k2:9092",
            "consumerGroup": "scorers",
            "topic": topic,
            "lagThreshold": "50",
            "offsetResetPolicy": "latest",
        }
        for topic in ("ticks", "quotes")
    ]
    [cron] = [t for t in body["triggers"] if t["type"] == "cron"]
    # 09:00 on weekdays: the window opens at 08:59 and closes at 09:01.
    assert cron["metadata"] == {
        "timezone": "Europe/London",
        "start": "59 8 * * 1-5",
        "end": "1 9 * * 1-5",
        "desiredReplicas": "1",
    }
    [cpu] = [t for t in body["triggers"] if t["type"] == "cpu"]
    assert cpu["metricType"] == "Utilization" and cpu["metadata"] == {"value": "70"}
    # every value of a trigger's metadata is a string (KEDA's map[string]string)
    assert all(isinstance(v, str) for t in body["triggers"] for v in t["metadata"].values())
    assert keda.plan(s).warnings == []
    assert keda.owns_count(s)


@pytest.mark.parametrize(
    ("schedule", "windows"),
    [
        ("0 9 * * 1-5", [("59 8 * * 1-5", "1 9 * * 1-5")]),
        ("@hourly", [("59 * * * *", "1 * * * *")]),
        ("30 */6 * * *", [("29 0,6,12,18 * * *", "31 0,6,12,18 * * *")]),
        # a firing at :00 opens its window in the hour before: its own trigger
        (
            "0,20,40 * * * *",
            [("19,39 * * * *", "21,41 * * * *"), ("59 * * * *", "1 * * * *")],
        ),
        # seconds first (robfig/cron's 6 fields): the minutes are what KEDA sees
        ("15 0 12 * * *", [("59 11 * * *", "1 12 * * *")]),
        ("59 23 * * *", [("58 23 * * *", "0 0 * * *")]),
    ],
)
def test_cron_firings_become_windows_around_them(
    schedule: str, windows: list[tuple[str, str]]
) -> None:
    assert keda.cron_windows(schedule) == (windows, True)


def test_firings_too_close_for_windows_or_without_a_cron_form_keep_one_replica() -> None:
    assert keda.cron_windows("*/2 * * * *") == ([], True)
    assert keda.cron_windows("0 9 * JAN MON") is not None  # day fields pass through
    assert keda.cron_windows("0 9-17/x * * *") is None
    # a window crossing midnight on named days is read on the wrong day: said
    assert keda.cron_windows("0 0 * * 1") == ([("59 23 * * 1", "1 0 * * 1")], False)
    every = {"kind": "cron", "attributes": {"interval": "30s"}}
    p = keda.plan(spec(minReplicas=0, maxReplicas=3, triggers={"in": KAFKA, "tick": every}))
    assert p.min_replicas == 1
    assert [t["type"] for t in p.triggers] == ["kafka", "kafka"]
    assert any("interval counts from a replica's start" in w for w in p.warnings)


def test_what_keda_will_not_do_is_warned() -> None:
    s = spec(minReplicas=0, maxReplicas=4, targetInFlight=3, triggers={"in": KAFKA})
    warnings = keda.plan(s).warnings
    assert any("targetInFlight is accepted but not acted on" in w for w in warnings)
    # the default HTTP trigger: a request cannot wake it under KEDA
    assert any("HTTP request does not wake" in w for w in warnings)
    sasl = {**KAFKA["attributes"], "sasl": {"enable": True, "user": "u", "password": "hunter2"}}
    p = keda.plan(
        spec(minReplicas=1, maxReplicas=4, triggers={"in": {**KAFKA, "attributes": sasl}})
    )
    assert any("TriggerAuthentication" in w for w in p.warnings)
    assert not any("hunter2" in w for w in p.warnings)  # never the credentials


def test_keda_owns_only_autoscaled_functions_with_something_to_scale_on() -> None:
    assert not keda.owns_count(spec(replicas=3, triggers={"in": KAFKA}))  # fixed count
    assert not keda.owns_count(spec(minReplicas=1, maxReplicas=4))  # HTTP only: in-flight
    assert keda.owns_count(spec(minReplicas=1, maxReplicas=4, targetCPU=50))


async def test_keda_weighs_lag_beside_cpu_so_target_lag_is_not_warned() -> None:
    s = spec(minReplicas=1, maxReplicas=4, targetLag=20, targetCPU=50, triggers={"in": KAFKA})
    hpa_only = unacted_fields(s, {"targetCPU"}, "kubernetes")
    assert hpa_only == [
        "spec field targetLag is accepted but not acted on by the kubernetes platform"
    ]
    assert unacted_fields(s, {"targetCPU", LAG_WITH_CPU}, "kubernetes") == []
    tickrun = KubernetesPlatform("ns")
    by_keda = KubernetesPlatform("ns", autoscaler="keda")
    for p in (tickrun, by_keda):
        p._metrics = True  # as if the cluster served metrics.k8s.io (no API call here)
    assert LAG_WITH_CPU in await by_keda.acts_on_spec(s)
    assert LAG_WITH_CPU not in await tickrun.acts_on_spec(s)
    assert tickrun.owns_count(s) and by_keda.owns_count(s)  # an HPA, or KEDA
    fixed = spec(replicas=2, triggers={"in": KAFKA})
    assert not by_keda.owns_count(fixed) and by_keda.warnings(fixed) == []
